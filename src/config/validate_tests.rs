//! Unit tests of `validate`: defaults, overlay, every check naming its file and field.
use super::*;
use crate::config::{RevisionRef, TrafficTarget};

fn check(gateway: &str, apps: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let raw: RawGatewayFile = toml::from_str(gateway).unwrap();
    let apps: Vec<(PathBuf, RawApp)> = apps
        .iter()
        .map(|(name, text)| {
            (
                PathBuf::from(format!("apps/{name}.toml")),
                toml::from_str(text).unwrap(),
            )
        })
        .collect();
    validate(Path::new("tidegate.toml"), &raw, &apps)
}

fn errors(gateway: &str, apps: &[(&str, &str)]) -> String {
    check(gateway, apps).unwrap_err().to_string()
}

const STATIC: &str = "runtime = \"static\"\n[static]\nupstreams = [\"127.0.0.1:3000\"]\n";

#[test]
fn defaults_fill_in_and_the_default_host_is_app_project_domain() {
    let config = check("[gateway]\ndomain = \"Example.COM.\"", &[("web", STATIC)]).unwrap();
    let app = &config.apps[0];
    assert_eq!(app.name, "web", "the name defaults to the file name");
    assert_eq!(app.project, "default");
    assert_eq!(
        app.hosts,
        vec![HostPattern::Exact("web.default.example.com".into())]
    );
    assert_eq!(app.scale, ScaleSpec::default());
    assert_eq!(config.gateway.apps_dir, PathBuf::from("apps"));
    assert_eq!(config.gateway.http, Some("127.0.0.1:8080".parse().unwrap()));
}

#[test]
fn app_scale_overlays_defaults_and_concurrency_sets_the_soft_target() {
    let config = check(
        "[defaults]\nmax_scale = 7\nconcurrency = 20\nscale_to_zero_grace = \"250ms\"",
        &[(
            "web",
            &format!("{STATIC}[scale]\nmin_scale = 1\nconcurrency = 10"),
        )],
    )
    .unwrap();
    let scale = &config.apps[0].scale;
    assert_eq!((scale.min_scale, scale.max_scale), (1, 7));
    assert_eq!(scale.concurrency, 10);
    assert_eq!(scale.concurrency_target, 10.0);
    assert_eq!(scale.scale_to_zero_grace, Duration::from_millis(250));
}

#[test]
fn every_problem_names_its_file_and_field() {
    let text = errors(
        "[gateway]\nhttp = \"localhost\"\n[defaults]\ntarget_utilization = 1.5\npanic_window = \"2m\"",
        &[
            ("a", "runtime = \"static\"\n[static]\nupstreams = []"),
            ("e", "runtime = \"static\"\n[static]\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:1\"]"),
            ("b", "runtime = \"docker\""),
            ("c", "runtime = \"process\"\n[run]\ncommand = [\"x\"]\nport_env = \"1X\"\nreadiness_path = \"healthz\"\nenv = { \"A-B\" = \"1\" }"),
            ("d", &format!("visibility = \"secret\"\n{STATIC}")),
        ],
    );
    for expected in [
        "tidegate.toml: gateway.http: \"localhost\" is not an address",
        "tidegate.toml: defaults.target_utilization: must be in (0, 1]",
        "tidegate.toml: defaults.panic_window: must be longer than 0s and no longer than stable_window",
        "apps/a.toml: static.upstreams: needs at least one address",
        "apps/e.toml: static.upstreams[1]: 127.0.0.1:1 is listed twice",
        "apps/b.toml: runtime: \"docker\" is not one of",
        "apps/c.toml: run.port_env: \"1X\" is not a valid variable name",
        "apps/c.toml: run.readiness_path: \"healthz\" must start with \"/\"",
        "apps/c.toml: run.env.A-B: is not a valid variable name",
        "apps/d.toml: visibility: \"secret\" is not one of",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // A bad [defaults] value is reported once, not again for every app that inherits it.
    assert!(!text.contains("apps/a.toml: scale."), "{text}");
}

#[test]
fn duplicate_names_and_hosts_are_refused() {
    let text = errors(
        "",
        &[
            (
                "a",
                &format!("name = \"x\"\nhosts = [\"*.shop.example\"]\n{STATIC}"),
            ),
            ("b", &format!("name = \"x\"\n{STATIC}")),
            (
                "c",
                &format!("hosts = [\"*.shop.example\", \"x.default.localhost\"]\n{STATIC}"),
            ),
        ],
    );
    assert!(
        text.contains("apps/b.toml: name: app \"x\" is already defined in apps/a.toml"),
        "{text}"
    );
    assert!(
        text.contains("apps/c.toml: hosts: host *.shop.example is already routed to app \"x\""),
        "{text}"
    );
    assert!(
        text.contains(
            "apps/c.toml: hosts: host x.default.localhost is already routed to app \"x\""
        ),
        "{text}"
    );
}

#[test]
fn durations_need_a_unit() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    assert!(parse_duration("30").is_err());
    assert!(
        parse_duration("1000000y").is_err(),
        "would overflow a timer"
    );
    assert!(parse_duration("99y").is_ok());
    assert!(parse_duration("soon").is_err());
}

#[test]
fn host_patterns() {
    assert_eq!(
        parse_host_pattern("*.Example.com").unwrap(),
        HostPattern::Wildcard("example.com".into())
    );
    assert_eq!(
        parse_host_pattern("API.example.com.").unwrap(),
        HostPattern::Exact("api.example.com".into())
    );
    assert!(parse_host_pattern("*").is_err());
    assert!(parse_host_pattern("a.*.com").is_err());
    assert!(parse_host_pattern("bad host").is_err());
}

const PROCESS: &str = "[run]\ncommand = [\"app\"]\n";

#[test]
fn traffic_defaults_to_all_latest_and_checks_every_entry() {
    let config = check("", &[("web", PROCESS)]).unwrap();
    assert_eq!(config.apps[0].traffic, TrafficTarget::all_latest());
    assert_eq!(config.apps[0].revision_history, 10);

    let text = errors(
        "",
        &[(
            "web",
            &format!(
                "revision_history = 0\n{PROCESS}\n[[traffic]]\nrevision = \"api-00001\"\npercent = 50\n\
                 [[traffic]]\nrevision = \"latest\"\npercent = 120\ntag = \"Bad_Tag\"\n\
                 [[traffic]]\npercent = 10\n"
            ),
        )],
    );
    for expected in [
        "apps/web.toml: revision_history:",
        "apps/web.toml: traffic[0].revision: \"api-00001\" is not \"latest\" or a revision of this app",
        "apps/web.toml: traffic[1].percent: 120 is above 100",
        "apps/web.toml: traffic[1].tag:",
        "apps/web.toml: traffic[2].revision: is required",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let sum = errors(
        "",
        &[(
            "web",
            &format!("{PROCESS}\n[[traffic]]\nrevision = \"latest\"\npercent = 90\n"),
        )],
    );
    assert!(
        sum.contains("apps/web.toml: traffic: the percentages add up to 90"),
        "{sum}"
    );
}

#[test]
fn tags_get_hosts_that_must_not_clash_and_static_apps_have_no_traffic() {
    let tagged = format!(
        "{PROCESS}\n[[traffic]]\nrevision = \"web-00001\"\npercent = 100\ntag = \"stable\"\n"
    );
    let config = check("", &[("web", &tagged)]).unwrap();
    let target = &config.apps[0].traffic[0];
    assert_eq!(target.revision, RevisionRef::Number(1));
    assert_eq!(
        target.tag,
        Some(("stable".into(), "stable-web.default.localhost".into()))
    );
    let clash = errors(
        "",
        &[
            ("web", &tagged),
            (
                "other",
                &format!("hosts = [\"stable-web.default.localhost\"]\n{PROCESS}"),
            ),
        ],
    );
    assert!(
        clash.contains("host stable-web.default.localhost is already routed"),
        "{clash}"
    );
    let static_traffic = errors(
        "",
        &[(
            "web",
            &format!("{STATIC}\n[[traffic]]\nrevision = \"latest\"\npercent = 100\n"),
        )],
    );
    assert!(
        static_traffic.contains("apps/web.toml: traffic: a static app"),
        "{static_traffic}"
    );
}

#[test]
fn resources_are_parsed_into_the_run_spec() {
    let config = check(
        "",
        &[(
            "web",
            "[run]\ncommand = [\"app\"]\ncpu = 0.5\nmemory = \"256Mi\"\n",
        )],
    )
    .unwrap();
    let RuntimeSpec::Process(run) = &config.apps[0].runtime else {
        panic!("a process app");
    };
    assert_eq!(run.resources.cpu_millis, Some(500));
    assert_eq!(run.resources.memory_bytes, Some(256 << 20));
    let text = errors(
        "",
        &[(
            "web",
            "[run]\ncommand = [\"app\"]\ncpu = 0\nmemory = \"1K\"\n",
        )],
    );
    assert!(text.contains("apps/web.toml: run.cpu:"), "{text}");
    assert!(text.contains("apps/web.toml: run.memory:"), "{text}");
}

#[test]
fn stall_limits_have_nginx_and_knative_defaults_and_0s_lifts_idle_timeout() {
    let config = check("", &[("web", STATIC)]).unwrap();
    let limits = &config.gateway.limits;
    assert_eq!(limits.client_body_timeout, Duration::from_secs(60));
    assert_eq!(limits.send_timeout, Duration::from_secs(60));
    assert_eq!(
        config.apps[0].scale.idle_timeout, None,
        "no limit, as in Knative"
    );

    let config = check(
        "[defaults]\nidle_timeout = \"2m\"",
        &[
            ("web", STATIC),
            ("api", &format!("{STATIC}[scale]\nidle_timeout = \"5s\"")),
            ("sse", &format!("{STATIC}[scale]\nidle_timeout = \"0s\"")),
        ],
    )
    .unwrap();
    let idle = |name: &str| {
        let app = config.apps.iter().find(|app| app.name == name).unwrap();
        app.scale.idle_timeout
    };
    assert_eq!(idle("web"), Some(Duration::from_secs(120)));
    assert_eq!(idle("api"), Some(Duration::from_secs(5)));
    assert_eq!(
        idle("sse"),
        None,
        "0s lifts the default's limit, as Knative's 0"
    );

    let text = errors(
        "[gateway]\nclient_body_timeout = \"0s\"\nsend_timeout = \"soon\"",
        &[("b", &format!("{STATIC}[scale]\nidle_timeout = \"5\""))],
    );
    for expected in [
        "tidegate.toml: gateway.client_body_timeout: must be longer than 0s",
        "tidegate.toml: gateway.send_timeout: ",
        "apps/b.toml: scale.idle_timeout: ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // An unparsable value is reported once, for what it is.
    assert_eq!(text.matches("apps/b.toml").count(), 1, "{text}");
}
