//! One test per planning rule, on hand-made snapshots; panic mode and the scale-to-zero grace
//! go through the KPA on a paused clock, as the controller feeds it.

use std::time::Duration;

use super::*;
use crate::autoscaler::kpa::Kpa;

fn revision(number: u32, role: Role, desired: u32) -> RevisionView {
    RevisionView {
        number,
        role,
        prep: PrepState::Ready,
        desired,
        floor: 0,
        queued: 0,
        backoff_until: None,
        cold_start_since: None,
    }
}

fn member(id: &str, revision: u32, state: State, in_flight: u32) -> MemberView {
    MemberView {
        id: id.into(),
        revision,
        state,
        in_flight,
    }
}

fn one_revision(view: RevisionView, members: Vec<MemberView>) -> Snapshot {
    Snapshot {
        latest: view.number,
        latest_ready: Some(view.number),
        revisions: vec![view],
        members,
    }
}

fn starts(actions: &[Action]) -> u32 {
    actions
        .iter()
        .map(|action| match action {
            Action::Start { count, .. } => *count,
            _ => 0,
        })
        .sum()
}

fn drains(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Drain(id) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn queued_requests_force_one_instance_and_time_the_cold_start() {
    let now = Instant::now();
    let mut view = revision(1, Role::Serving, 0);
    view.queued = 3;
    let actions = plan(
        &one_revision(view.clone(), vec![]),
        &ScaleSpec::default(),
        now,
    );
    assert!(actions.contains(&Action::ColdStartBegins(1)));
    assert_eq!(starts(&actions), 1, "{actions:?}");

    // Already timed, and one starting: nothing more.
    view.cold_start_since = Some(now);
    let snapshot = one_revision(view.clone(), vec![member("a", 1, State::Starting, 0)]);
    assert_eq!(plan(&snapshot, &ScaleSpec::default(), now), vec![]);

    // `max_scale = 0` disables the app: waiting requests start nothing.
    let off = ScaleSpec {
        max_scale: 0,
        ..ScaleSpec::default()
    };
    assert_eq!(starts(&plan(&one_revision(view, vec![]), &off, now)), 0);
}

#[test]
fn scaling_down_drains_the_least_busy_and_never_for_a_starting_one() {
    let now = Instant::now();
    let members = vec![
        member("busy", 1, State::Ready, 5),
        member("idle", 1, State::Ready, 1),
        member("new", 1, State::Starting, 0),
    ];
    let actions = plan(
        &one_revision(revision(1, Role::Serving, 1), members),
        &ScaleSpec::default(),
        now,
    );
    // Three live, one wanted: but only one ready instance may go, not the starting one's
    // place; the starting one is drained once ready if still not needed.
    assert_eq!(drains(&actions), vec!["idle"]);
    assert_eq!(starts(&actions), 0);
}

#[test]
fn a_new_revision_starts_what_the_old_one_serves_and_takes_over_once_that_many_are_ready() {
    let now = Instant::now();
    let mut new = revision(2, Role::RollingOut, 0);
    new.floor = 1;
    let mut snapshot = Snapshot {
        revisions: vec![revision(1, Role::Serving, 3), new],
        members: vec![
            member("old-1", 1, State::Ready, 2),
            member("old-2", 1, State::Ready, 2),
            member("old-3", 1, State::Ready, 2),
        ],
        latest: 2,
        latest_ready: Some(1),
    };
    let actions = plan(&snapshot, &ScaleSpec::default(), now);
    assert_eq!(
        actions,
        vec![Action::Start {
            revision: 2,
            count: 3
        }]
    );

    // Two of three ready: no takeover yet.
    for (i, state) in [State::Ready, State::Ready, State::Starting]
        .into_iter()
        .enumerate()
    {
        snapshot
            .members
            .push(member(&format!("new-{i}"), 2, state, 0));
    }
    assert!(!plan(&snapshot, &ScaleSpec::default(), now).contains(&Action::Promote(2)));
    snapshot.members.last_mut().unwrap().state = State::Ready;
    assert_eq!(
        plan(&snapshot, &ScaleSpec::default(), now),
        vec![Action::Promote(2)]
    );
}

#[test]
fn an_edit_to_an_app_at_zero_still_proves_itself_with_one_instance() {
    let now = Instant::now();
    let mut new = revision(2, Role::RollingOut, 0);
    new.floor = 1;
    let snapshot = Snapshot {
        revisions: vec![revision(1, Role::Serving, 0), new],
        members: vec![],
        latest: 2,
        latest_ready: Some(1),
    };
    let actions = plan(&snapshot, &ScaleSpec::default(), now);
    assert_eq!(
        actions,
        vec![Action::Start {
            revision: 2,
            count: 1
        }]
    );
}

#[test]
fn a_retired_revision_drains_everything_then_leaves() {
    let now = Instant::now();
    let snapshot = Snapshot {
        revisions: vec![revision(1, Role::Retired, 4), revision(2, Role::Serving, 1)],
        members: vec![
            member("old-ready", 1, State::Ready, 9),
            member("old-starting", 1, State::Starting, 0),
            member("new", 2, State::Ready, 0),
        ],
        latest: 2,
        latest_ready: Some(2),
    };
    let actions = plan(&snapshot, &ScaleSpec::default(), now);
    assert_eq!(
        actions,
        vec![
            Action::Drain("old-ready".into()),
            Action::StopStarting("old-starting".into())
        ]
    );
    let gone = Snapshot {
        members: vec![member("new", 2, State::Ready, 0)],
        ..snapshot
    };
    assert_eq!(
        plan(&gone, &ScaleSpec::default(), now),
        vec![Action::Forget(1)]
    );
}

#[tokio::test(start_paused = true)]
async fn crash_backoff_holds_starts_until_it_has_passed() {
    let now = Instant::now();
    let mut view = revision(1, Role::Serving, 2);
    view.backoff_until = Some(now + Duration::from_millis(400));
    let snapshot = one_revision(view, vec![]);
    assert_eq!(starts(&plan(&snapshot, &ScaleSpec::default(), now)), 0);
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(
        starts(&plan(&snapshot, &ScaleSpec::default(), Instant::now())),
        2
    );
}

#[test]
fn preparation_comes_first_and_a_failed_one_fails_the_waiters() {
    let now = Instant::now();
    let mut view = revision(1, Role::Serving, 1);
    view.prep = PrepState::Needed;
    view.queued = 1;
    let actions = plan(
        &one_revision(view.clone(), vec![]),
        &ScaleSpec::default(),
        now,
    );
    assert_eq!(
        actions,
        vec![Action::Prepare(1), Action::ColdStartBegins(1)],
        "nothing starts before the build"
    );
    view.prep = PrepState::Failed("build failed: exit 1".into());
    view.cold_start_since = Some(now);
    assert_eq!(
        plan(&one_revision(view, vec![]), &ScaleSpec::default(), now),
        vec![Action::FailWaiters {
            revision: 1,
            reason: "build failed: exit 1".into()
        }]
    );
}

/// The KPA's decision for a revision with `ready` instances, fed to the planner.
fn plan_with(kpa: &mut Kpa, ready: u32, scale: &ScaleSpec) -> (Vec<Action>, bool) {
    let now = Instant::now();
    let decision = kpa.decide(now, ready, scale);
    let members = (0..ready)
        .map(|i| member(&format!("i{i}"), 1, State::Ready, 0))
        .collect();
    let view = revision(1, Role::Serving, decision.desired);
    (
        plan(&one_revision(view, members), scale, now),
        decision.panic,
    )
}

#[tokio::test(start_paused = true)]
async fn a_burst_panics_and_scales_out_at_once() {
    let scale = ScaleSpec {
        concurrency_target: 10.0,
        ..ScaleSpec::default()
    };
    let mut kpa = Kpa::new(Instant::now());
    for _ in 0..60 {
        kpa.record(Instant::now(), 7.0, true);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let (actions, panic) = plan_with(&mut kpa, 1, &scale);
    assert!(!panic);
    assert_eq!(starts(&actions), 0, "7 in flight is one instance at 70%");
    // 40 in flight for 2 s: the panic window sees more than twice what one instance takes.
    for _ in 0..4 {
        kpa.record(Instant::now(), 40.0, true);
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    let (actions, panic) = plan_with(&mut kpa, 1, &scale);
    assert!(panic);
    assert!(starts(&actions) >= 2, "{actions:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_revision_goes_to_zero_only_after_the_grace() {
    let scale = ScaleSpec {
        stable_window: Duration::from_secs(6),
        panic_window: Duration::from_secs(2),
        scale_to_zero_grace: Duration::from_secs(10),
        ..ScaleSpec::default()
    };
    let mut kpa = Kpa::new(Instant::now());
    kpa.record(Instant::now(), 1.0, true);
    // Without traffic, through the stable window and most of the grace: one instance stays.
    for _ in 0..9 {
        tokio::time::advance(Duration::from_secs(1)).await;
        kpa.record(Instant::now(), 0.0, false);
        let (actions, _) = plan_with(&mut kpa, 1, &scale);
        assert!(drains(&actions).is_empty(), "{actions:?}");
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    kpa.record(Instant::now(), 0.0, false);
    let (actions, _) = plan_with(&mut kpa, 1, &scale);
    assert_eq!(drains(&actions), vec!["i0"]);
}
