//! `run.cpu` and `run.memory` become cgroup limits of process instances, and an instance
//! killed for its memory limit is reported as such.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tidegate::runtime::cgroup::Cgroups;

const HOST: &str = "web.p.test.local";

/// The instance's group path in the hierarchy with `controller` (v1), or the unified one.
fn group_file(pid: &str, controller: &str, v1_file: &str, v2_file: &str) -> PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    });
    match v1.filter(|path| path.contains("tidegate-")) {
        Some(path) => {
            let mount = if controller == "cpu" && !PathBuf::from("/sys/fs/cgroup/cpu").exists() {
                "/sys/fs/cgroup/cpu,cpuacct"
            } else if controller == "cpu" {
                "/sys/fs/cgroup/cpu"
            } else {
                "/sys/fs/cgroup/memory"
            };
            PathBuf::from(format!("{mount}{path}/{v1_file}"))
        }
        None => {
            let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            PathBuf::from(format!("/sys/fs/cgroup{path}/{v2_file}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_limits_apply_and_an_out_of_memory_kill_is_reported() {
    match Cgroups::detect() {
        Ok(probe) => probe.remove(),
        Err(reason) => {
            // The gateway runs instances unlimited and says so at start-up; nothing to test.
            eprintln!("skipping: this machine has no usable cgroups: {reason}");
            return;
        }
    }
    let config = ConfigDir::new("", "");
    config.write_app(
        "web",
        &format!(
            "name = \"web\"\nproject = \"p\"\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\n\
             readiness_path = \"/healthz\"\ncpu = 0.25\nmemory = \"64Mi\"\n"
        ),
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let pid = get(addr, HOST, "/pid").await.body.trim().to_string();

    let memory = group_file(&pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert!(
        memory
            .to_string_lossy()
            .contains(&format!("tidegate-{}", std::process::id())),
        "{memory:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&memory).unwrap().trim(),
        (64u64 << 20).to_string()
    );
    let cpu = group_file(&pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    let quota = std::fs::read_to_string(&cpu).unwrap();
    assert!(quota.starts_with("25000"), "{cpu:?}: {quota}");

    // Well within the limit, then far beyond it.
    assert_eq!(get(addr, HOST, "/alloc/8").await.status, StatusCode::OK);
    let answer = get(addr, HOST, "/alloc/256").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    eventually(
        "the out-of-memory kill to be reported",
        Duration::from_secs(10),
        || async {
            let status = app_status(&handle, "web").await;
            status["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("exceeding its memory limit of 64 MiB"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&handle, "tidegate_instance_oom_kills_total{app=\"web\"}").await,
        1.0
    );
    // A replacement serves, and the dead instance's group is gone.
    let answer = get(addr, HOST, "/pid").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_ne!(answer.body.trim(), pid);
    eventually(
        "the old group to be removed",
        Duration::from_secs(5),
        || async { (!memory.exists()).then_some(()) },
    )
    .await;
    handle.shutdown().await;
    let parent = memory.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(!parent.exists(), "{parent:?} is left after shutdown");
}
