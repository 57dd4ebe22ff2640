//! CPU and memory limits for process instances, through Linux cgroups.
//!
//! At start-up the process backend looks for the cpu and memory controllers: cgroup v2 when
//! the unified tree has them, else the v1 hierarchies (hybrid machines mount both, with the
//! controllers on v1). It makes one group `tidegate-<pid>-<n>` below the gateway's own group in
//! each, and one group per instance below that, with `cpu = 0.5` as a CFS quota of 50 ms per
//! 100 ms and `memory` as a hard limit. The child joins its groups itself, between fork and
//! exec, so nothing it runs or forks escapes the limits. When the controllers are missing or
//! not writable the gateway says so once at start-up and runs instances without limits.
//!
//! An instance the kernel kills for its memory limit shows in the group's `oom_kill` count,
//! so its exit is reported as out of memory rather than as a bare SIGKILL.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::Resources;

const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Where instance groups go, found once at start-up.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// v1: the gateway's groups in the cpu and the memory hierarchy; v2: one group.
    cpu_parent: PathBuf,
    memory_parent: PathBuf,
}

impl Cgroups {
    /// Finds writable cpu and memory controllers, makes the gateway's parent groups and
    /// removes those left by gateways that died. The error says why limits cannot apply.
    pub fn detect() -> Result<Cgroups, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        // One parent per backend, so gateways sharing a process (tests) never share groups.
        static BACKENDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = BACKENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parent_name = format!("tidegate-{}-{serial}", std::process::id());
        let found = v2_groups(&own, &mounts)
            .or_else(|| v1_groups(&own, &mounts))
            .ok_or("no cgroup hierarchy with the cpu and memory controllers is mounted")?;
        let (version, cpu_base, memory_base) = found;
        for base in [&cpu_base, &memory_base] {
            remove_stale_groups(base);
        }
        if version == Version::V2 {
            // Controllers must be enabled for the children of every group on the way down.
            // A v2 group with processes in it may not enable them (the "no internal
            // processes" rule): the gateway then moves itself into a leaf group of its own,
            // as container runtimes do in a delegated cgroup.
            if enable_v2_controllers(&cpu_base).is_err() {
                let leaf = cpu_base.join("tidegate-gateway");
                std::fs::create_dir_all(&leaf)
                    .map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
                std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
                    .map_err(|e| format!("cannot move the gateway into {}: {e}", leaf.display()))?;
                enable_v2_controllers(&cpu_base)?;
            }
        }
        let cgroups = Cgroups {
            version,
            cpu_parent: cpu_base.join(&parent_name),
            memory_parent: memory_base.join(&parent_name),
        };
        for dir in cgroups.parents() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if version == Version::V2 {
            enable_v2_controllers(&cgroups.cpu_parent)?;
        }
        Ok(cgroups)
    }

    /// `cgroup v1 (/sys/fs/cgroup/memory/...)`, for the start-up message.
    pub fn describe(&self) -> String {
        match self.version {
            Version::V1 => format!(
                "cgroup v1 ({} and {})",
                self.cpu_parent.display(),
                self.memory_parent.display()
            ),
            Version::V2 => format!("cgroup v2 ({})", self.cpu_parent.display()),
        }
    }

    fn parents(&self) -> Vec<&PathBuf> {
        if self.cpu_parent == self.memory_parent {
            vec![&self.cpu_parent]
        } else {
            vec![&self.cpu_parent, &self.memory_parent]
        }
    }

    /// Makes the groups of one instance with its limits; the instance joins them at start.
    pub fn create(&self, instance: &str, resources: &Resources) -> std::io::Result<InstanceGroup> {
        let group = InstanceGroup {
            version: self.version,
            dirs: self
                .parents()
                .into_iter()
                .map(|parent| parent.join(instance))
                .collect(),
            memory_dir: self.memory_parent.join(instance),
            memory_limit: resources.memory_bytes,
        };
        for dir in &group.dirs {
            std::fs::create_dir_all(dir)?;
        }
        let cpu_dir = self.cpu_parent.join(instance);
        let written = (|| {
            if let Some(millis) = resources.cpu_millis {
                let quota = u64::from(millis) * CFS_PERIOD_US / 1000;
                match self.version {
                    Version::V1 => {
                        std::fs::write(
                            cpu_dir.join("cpu.cfs_period_us"),
                            CFS_PERIOD_US.to_string(),
                        )?;
                        std::fs::write(cpu_dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                    }
                    Version::V2 => {
                        std::fs::write(
                            cpu_dir.join("cpu.max"),
                            format!("{quota} {CFS_PERIOD_US}"),
                        )?;
                    }
                }
            }
            if let Some(bytes) = resources.memory_bytes {
                match self.version {
                    Version::V1 => {
                        std::fs::write(
                            group.memory_dir.join("memory.limit_in_bytes"),
                            bytes.to_string(),
                        )?;
                        // Memory plus swap, where swap accounting is on, so the limit means
                        // what it says.
                        let _ = std::fs::write(
                            group.memory_dir.join("memory.memsw.limit_in_bytes"),
                            bytes.to_string(),
                        );
                    }
                    Version::V2 => {
                        std::fs::write(group.memory_dir.join("memory.max"), bytes.to_string())?;
                        // No swap either, so the limit means what it says.
                        let _ = std::fs::write(group.memory_dir.join("memory.swap.max"), "0");
                    }
                }
            }
            Ok(())
        })();
        if let Err(error) = written {
            group.remove();
            return Err(error);
        }
        Ok(group)
    }

    /// Removes the gateway's parent groups (at shutdown, once every instance is gone).
    pub fn remove(&self) {
        for dir in self.parents() {
            remove_group_tree(dir);
        }
    }

    /// [`Cgroups::remove`] at shutdown: the kernel may still count a just-reaped instance in
    /// its group for a moment (rmdir says busy), so this tries again for up to a second
    /// rather than leave the groups behind.
    pub async fn remove_patiently(&self) {
        for _ in 0..50 {
            self.remove();
            if self.parents().iter().all(|dir| !dir.exists()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for dir in self.parents() {
            if dir.exists() {
                tracing::warn!(group = %dir.display(), "cgroup still busy after shutdown; the next start removes it");
            }
        }
    }
}

/// Removes a gateway's group and its (empty) instance groups.
fn remove_group_tree(dir: &Path) {
    if let Ok(instances) = std::fs::read_dir(dir) {
        for instance in instances.flatten() {
            if instance.path().is_dir() {
                let _ = std::fs::remove_dir(instance.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One instance's groups.
#[derive(Debug)]
pub struct InstanceGroup {
    version: Version,
    dirs: Vec<PathBuf>,
    memory_dir: PathBuf,
    memory_limit: Option<u64>,
}

impl InstanceGroup {
    /// The `cgroup.procs` files the child writes "0" to, joining the groups; prepared before
    /// the fork, since the child may not allocate.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|dir| CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// How many processes of the instance the kernel killed for its memory limit.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// The memory limit, for messages.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Whether any of the groups is still there.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|dir| dir.exists())
    }

    /// Removes the groups; they must be empty (the instance's processes have exited).
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The unified hierarchy, when it has both controllers for our group.
fn v2_groups(own: &str, mounts: &str) -> Option<(Version, PathBuf, PathBuf)> {
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mount = mount_points(mounts, "cgroup2", None).into_iter().next()?;
    let group = mount.join(path.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(group.join("cgroup.controllers")).ok()?;
    let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
    (has("cpu") && has("memory")).then(|| (Version::V2, group.clone(), group))
}

/// The v1 cpu and memory hierarchies, at our own groups in them.
fn v1_groups(own: &str, mounts: &str) -> Option<(Version, PathBuf, PathBuf)> {
    let group_in = |controller: &str| -> Option<PathBuf> {
        let path = own.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })?;
        let mount = mount_points(mounts, "cgroup", Some(controller))
            .into_iter()
            .next()?;
        Some(mount.join(path.trim_start_matches('/')))
    };
    Some((Version::V1, group_in("cpu")?, group_in("memory")?))
}

/// Mount points of `fstype` from /proc/self/mountinfo, for v1 only those with `controller`
/// among their super options.
fn mount_points(mountinfo: &str, fstype: &str, controller: Option<&str>) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let (kind, _source, options) = (after.next()?, after.next()?, after.next()?);
            let wanted = kind == fstype
                && controller.is_none_or(|c| options.split(',').any(|option| option == c));
            wanted.then(|| PathBuf::from(mount_point))
        })
        .collect()
}

fn enable_v2_controllers(group: &Path) -> Result<(), String> {
    let file = group.join("cgroup.subtree_control");
    std::fs::write(&file, "+cpu +memory").map_err(|e| {
        format!(
            "cannot enable the cpu and memory controllers in {}: {e}",
            file.display()
        )
    })
}

/// Removes `tidegate-<pid>-<n>` groups of gateways that are gone. Their instances died with them
/// (parent-death signal), so the groups are empty.
fn remove_stale_groups(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tidegate-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_group_tree(&entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn finds_v1_hierarchies_by_controller() {
        assert_eq!(
            mount_points(MOUNTINFO, "cgroup", Some("cpu")),
            vec![PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")]
        );
        assert_eq!(
            mount_points(MOUNTINFO, "cgroup", Some("memory")),
            vec![PathBuf::from("/sys/fs/cgroup/memory")]
        );
        assert_eq!(
            mount_points(MOUNTINFO, "cgroup2", None),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let own = "4:memory:/jobs/7\n3:cpu,cpuacct:/\n0::/\n";
        let (version, cpu, memory) = v1_groups(own, MOUNTINFO).unwrap();
        assert_eq!(version, Version::V1);
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/"));
        assert_eq!(memory, PathBuf::from("/sys/fs/cgroup/memory/jobs/7"));
    }
}
