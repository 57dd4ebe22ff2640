//! Knative's KPA decision as a pure function of the observed concurrency window, the policy
//! and the time: no I/O, no clock of its own, so its tests are exact.
//!
//! Concurrency samples go into 1-second buckets. Each decision averages the buckets of the
//! stable window (60 s) and of the panic window (6 s) and divides by the per-instance target
//! (`min(concurrency_target, concurrency) * target_utilization`). Rates limit how far one
//! decision may move from the ready count (up at most `max_scale_up_rate` times, down at most
//! to `1 / max_scale_down_rate`). When the panic-window estimate reaches `panic_threshold`
//! times the ready count, the autoscaler panics: it follows the panic window and never scales
//! down until the panic-window estimate has stayed below the threshold for a whole stable
//! window. `scale_down_delay` holds the highest decision of that long. `min_scale`/`max_scale`
//! clamp the result. An app goes to zero only after `scale_to_zero_grace` with no traffic
//! (nothing in flight and no new request), and then does so even if the stable window still
//! remembers older load: an idle app should cost nothing once the grace period has passed.
//! At zero the window is forgotten, so the next cold start is sized by the requests that
//! wake the app, not by the burst before it went idle.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ScaleSpec;

const BUCKET: Duration = Duration::from_secs(1);

/// One decision and what it was based on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub panic: bool,
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
}

/// The autoscaler's memory for one app: concurrency buckets, panic state, recent decisions.
#[derive(Debug)]
pub struct Kpa {
    epoch: Instant,
    /// (bucket index since `epoch`, sum of samples, number of samples).
    buckets: VecDeque<(u64, f64, u32)>,
    panic_since: Option<Instant>,
    max_panic: u32,
    recent: VecDeque<(Instant, u32)>,
    last_traffic: Option<Instant>,
}

impl Kpa {
    pub fn new(now: Instant) -> Self {
        Kpa {
            epoch: now,
            buckets: VecDeque::new(),
            panic_since: None,
            max_panic: 0,
            recent: VecDeque::new(),
            last_traffic: None,
        }
    }

    /// Records one concurrency sample (requests in flight or waiting). `traffic` says whether
    /// any request arrived since the previous sample, which short requests between samples
    /// would otherwise hide.
    pub fn record(&mut self, now: Instant, concurrency: f64, traffic: bool) {
        if traffic || concurrency > 0.0 {
            self.last_traffic = Some(now);
        }
        let index = self.bucket_index(now);
        match self.buckets.back_mut() {
            Some((last, sum, count)) if *last == index => {
                *sum += concurrency;
                *count += 1;
            }
            _ => self.buckets.push_back((index, concurrency, 1)),
        }
    }

    /// The time of the last sample that saw traffic.
    pub fn last_traffic(&self) -> Option<Instant> {
        self.last_traffic
    }

    /// Decides how many instances the app should have, given `ready` ready instances.
    pub fn decide(&mut self, now: Instant, ready: u32, policy: &ScaleSpec) -> Decision {
        self.prune(now, policy.stable_window.max(policy.panic_window));
        let stable = self.average(now, policy.stable_window);
        let panic_value = self.average(now, policy.panic_window);

        let hard = if policy.concurrency > 0 {
            f64::from(policy.concurrency)
        } else {
            f64::INFINITY
        };
        let target = (policy.concurrency_target.min(hard) * policy.target_utilization).max(0.01);
        let ready_count = f64::from(ready.max(1));
        let max_up = (policy.max_scale_up_rate * ready_count).ceil();
        let max_down = (f64::from(ready) / policy.max_scale_down_rate).floor();
        let limit = |value: f64| value.ceil().clamp(max_down, max_up) as u32;
        let desired_stable = limit(stable / target);
        let desired_panic = limit(panic_value / target);

        if panic_value / target / ready_count >= policy.panic_threshold {
            self.panic_since = Some(now);
        } else if let Some(since) = self.panic_since {
            if now.duration_since(since) >= policy.stable_window {
                self.panic_since = None;
                self.max_panic = 0;
            }
        }
        let panic = self.panic_since.is_some();
        let mut desired = if panic {
            // In panic the count only goes up.
            self.max_panic = self.max_panic.max(desired_panic).max(ready);
            self.max_panic
        } else {
            desired_stable
        };

        if !policy.scale_down_delay.is_zero() {
            while let Some((at, _)) = self.recent.front() {
                if now.duration_since(*at) > policy.scale_down_delay {
                    self.recent.pop_front();
                } else {
                    break;
                }
            }
            self.recent.push_back((now, desired));
            desired = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        }

        let idle_for = self
            .last_traffic
            .map(|at| now.duration_since(at))
            .unwrap_or(Duration::MAX);
        if idle_for > Duration::ZERO && idle_for >= policy.scale_to_zero_grace {
            desired = 0;
            // The window describes load that is gone: a later cold start must size itself by
            // the requests that wake the app, not by the burst before it went idle (a stale
            // panic once woke three instances for one request).
            self.buckets.clear();
            self.panic_since = None;
            self.max_panic = 0;
            self.recent.clear();
        } else if desired == 0 {
            // Traffic within the grace period keeps one instance.
            desired = 1;
        }

        Decision {
            desired: desired.clamp(policy.min_scale, policy.max_scale),
            panic,
            stable_concurrency: stable,
            panic_concurrency: panic_value,
        }
    }

    fn bucket_index(&self, now: Instant) -> u64 {
        (now.duration_since(self.epoch).as_millis() / BUCKET.as_millis()) as u64
    }

    fn prune(&mut self, now: Instant, keep: Duration) {
        let oldest = self.bucket_index(now).saturating_sub(keep.as_secs().max(1));
        while matches!(self.buckets.front(), Some((index, _, _)) if *index < oldest) {
            self.buckets.pop_front();
        }
    }

    /// Mean of the per-bucket means of the buckets within `window` before `now`. Seconds
    /// without a sample do not count, because the controller samples continuously; before a
    /// window has filled, the mean is over what has been seen.
    fn average(&self, now: Instant, window: Duration) -> f64 {
        let current = self.bucket_index(now);
        let span = window.as_secs().max(1);
        let mut total = 0.0;
        let mut buckets = 0u32;
        for (index, sum, count) in self.buckets.iter().rev() {
            if current - index >= span {
                break;
            }
            total += sum / f64::from(*count);
            buckets += 1;
        }
        if buckets == 0 {
            0.0
        } else {
            total / f64::from(buckets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScaleSpec {
        ScaleSpec {
            max_scale: 100,
            concurrency: 10,
            concurrency_target: 10.0,
            ..ScaleSpec::default()
        }
    }

    /// Feeds `concurrency` for `seconds` at four samples a second, deciding every 2 s as the
    /// controller does, with `ready` following the decision. Returns the last decision.
    fn run(
        kpa: &mut Kpa,
        now: &mut Instant,
        ready: &mut u32,
        seconds: u64,
        concurrency: f64,
        p: &ScaleSpec,
    ) -> Decision {
        let mut last = None;
        for step in 0..seconds * 4 {
            *now += Duration::from_millis(250);
            kpa.record(*now, concurrency, concurrency > 0.0);
            if step % 8 == 7 {
                let decision = kpa.decide(*now, *ready, p);
                *ready = decision.desired;
                last = Some(decision);
            }
        }
        last.expect("ran at least 2 s")
    }

    #[tokio::test(start_paused = true)]
    async fn a_cold_start_after_a_burst_sizes_itself_by_the_requests_waiting_now() {
        let p = ScaleSpec {
            scale_to_zero_grace: Duration::from_secs(10),
            ..policy()
        };
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 1;
        // A burst that panics to 10 instances, then silence past the grace period: zero.
        let decision = run(&mut kpa, &mut now, &mut ready, 8, 70.0, &p);
        assert!(decision.panic && decision.desired == 10, "{decision:?}");
        let decision = run(&mut kpa, &mut now, &mut ready, 12, 0.0, &p);
        assert_eq!(decision.desired, 0);
        // One request wakes the app within the stable window of the burst: one instance,
        // not what the burst needed.
        now += Duration::from_millis(250);
        kpa.record(now, 1.0, true);
        let decision = kpa.decide(now, 0, &p);
        assert_eq!(decision.desired, 1, "{decision:?}");
        assert!(!decision.panic);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_load_holds_concurrency_over_target() {
        let p = policy(); // target 10 * 0.7 = 7 per instance
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 1;
        let decision = run(&mut kpa, &mut now, &mut ready, 120, 35.0, &p);
        assert_eq!(decision.desired, 5);
        assert!(!decision.panic);
        assert!((decision.stable_concurrency - 35.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_up_panics_and_scales_at_once() {
        let p = policy();
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 1;
        run(&mut kpa, &mut now, &mut ready, 60, 5.0, &p);
        assert_eq!(ready, 1);
        // 70 concurrent: the 6 s window sees it within seconds; the 60 s one would not.
        let decision = run(&mut kpa, &mut now, &mut ready, 2, 70.0, &p);
        assert!(decision.panic);
        assert!(decision.desired >= 4, "{decision:?}");
        assert!(
            decision.stable_concurrency < 14.0,
            "the stable window alone would ask for 2"
        );
        let decision = run(&mut kpa, &mut now, &mut ready, 6, 70.0, &p);
        assert!(decision.panic);
        assert_eq!(decision.desired, 10);
        // Load falls back: panic holds the count until a stable window passes calmly.
        let decision = run(&mut kpa, &mut now, &mut ready, 30, 5.0, &p);
        assert!(decision.panic);
        assert_eq!(decision.desired, 10);
        let decision = run(&mut kpa, &mut now, &mut ready, 60, 5.0, &p);
        assert!(!decision.panic);
        assert!(decision.desired < 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_down_is_rate_limited() {
        let p = policy();
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 20;
        run(&mut kpa, &mut now, &mut ready, 120, 140.0, &p);
        assert_eq!(ready, 20);
        // Drop to almost nothing: each decision at most halves (max_scale_down_rate 2).
        let mut counts = Vec::new();
        for _ in 0..5 {
            for _ in 0..8 {
                now += Duration::from_millis(250);
                kpa.record(now, 0.5, true);
            }
            // Pretend the stable window has forgotten the load, to isolate the rate limit.
            kpa.buckets
                .retain(|(_, sum, count)| sum / f64::from(*count) < 1.0);
            let decision = kpa.decide(now, ready, &p);
            counts.push(decision.desired);
            ready = decision.desired;
        }
        assert_eq!(counts, vec![10, 5, 2, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_to_zero_waits_for_the_grace_period() {
        let p = ScaleSpec {
            scale_to_zero_grace: Duration::from_secs(30),
            ..policy()
        };
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 1;
        run(&mut kpa, &mut now, &mut ready, 10, 1.0, &p);
        // 28 s idle: still within the grace period, one instance stays.
        let decision = run(&mut kpa, &mut now, &mut ready, 28, 0.0, &p);
        assert_eq!(decision.desired, 1);
        // Past 30 s idle it goes to zero, though the 60 s window still held the load, and the
        // window is forgotten (see the cold-start test above).
        let decision = run(&mut kpa, &mut now, &mut ready, 4, 0.0, &p);
        assert_eq!(decision.desired, 0);
        assert_eq!(decision.stable_concurrency, 0.0);
        // A request at zero: the next decision asks for one instance.
        now += Duration::from_millis(1);
        kpa.record(now, 1.0, true);
        assert_eq!(kpa.decide(now, 0, &p).desired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn min_and_max_scale_clamp() {
        let p = ScaleSpec {
            min_scale: 2,
            max_scale: 4,
            ..policy()
        };
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 2;
        assert_eq!(
            run(&mut kpa, &mut now, &mut ready, 60, 500.0, &p).desired,
            4
        );
        assert_eq!(run(&mut kpa, &mut now, &mut ready, 200, 0.0, &p).desired, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_down_delay_holds_the_peak() {
        let p = ScaleSpec {
            scale_down_delay: Duration::from_secs(10),
            stable_window: Duration::from_secs(6),
            ..policy()
        };
        let mut now = Instant::now();
        let mut kpa = Kpa::new(now);
        let mut ready = 1;
        assert_eq!(run(&mut kpa, &mut now, &mut ready, 12, 28.0, &p).desired, 4);
        // After the load drops, the 6 s windows forget it quickly, but the delay holds 4 for 10 s.
        assert_eq!(run(&mut kpa, &mut now, &mut ready, 8, 7.0, &p).desired, 4);
        assert_eq!(run(&mut kpa, &mut now, &mut ready, 30, 7.0, &p).desired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cold_start_burst_starts_several_instances() {
        let p = policy();
        let now = Instant::now();
        let mut kpa = Kpa::new(now);
        kpa.record(now, 200.0, true);
        let decision = kpa.decide(now, 0, &p);
        assert!(decision.panic);
        assert_eq!(decision.desired, 29);
    }
}
