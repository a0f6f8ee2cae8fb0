//! Resource plans through Linux control groups, by writing cgroupfs files (no library: the
//! one that exists pulls in D-Bus).
//!
//! Every instance and task with a [`CgroupSpec`] gets a group of its own,
//! `<base>/turnout/<name>/<token>`, in each hierarchy that has a controller we use (cgroup v1:
//! one mount per controller or a few controllers; v2: one). `<base>` is the daemon's own group
//! in that hierarchy (from /proc/self/cgroup), or the mount's root when that is not writable.
//! The limits are written on that leaf, so the old and the new instance of an environment each
//! get the whole plan while a deploy overlaps them. The child joins the group between fork and
//! exec (see [`crate::process`]), so nothing it starts escapes the limits.
//!
//! The files are in the kernel's memory, not on a disk: reading and writing them does not block
//! for long, so they are used straight from async code.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tracing::{debug, warn};

use crate::error::SupervisorError;
use crate::process::{KILL_GRACE, token_of_a_live_process};

/// Limits for the processes of one instance or task. Each limit is optional; a plan with none
/// still groups the processes so their [`ResourceUsage`] can be read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgroupSpec {
    /// Unique per environment, e.g. "shop-prod": lowercase ASCII letters, digits and '-'.
    pub name: String,
    /// Bytes of memory (swap included where the kernel accounts it); the kernel kills a process
    /// of the group when it is reached.
    pub memory: Option<u64>,
    /// CPU time as a number of cores, e.g. 0.5.
    pub cpu: Option<f64>,
    /// Processes and threads at once; forks beyond it fail.
    pub pids: Option<u64>,
}

/// What an instance's processes use now. Each figure is None when its controller is not
/// available (or the instance has no [`CgroupSpec`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceUsage {
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU time used since the instance started, all its processes together.
    pub cpu_seconds: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    /// CPU accounting: a controller of its own in v1, part of every v2 group.
    CpuAcct,
    Pids,
}

impl Controller {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "memory" => Some(Self::Memory),
            "cpu" => Some(Self::Cpu),
            "cpuacct" => Some(Self::CpuAcct),
            "pids" => Some(Self::Pids),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::CpuAcct => "cpuacct",
            Self::Pids => "pids",
        }
    }
}

/// One mounted cgroup hierarchy with at least one controller we use.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    /// The daemon's own group in it, if that directory exists.
    own: Option<PathBuf>,
    controllers: Vec<Controller>,
    v2: bool,
}

/// The hierarchies of this machine, found once: a v2 hierarchy with controllers if there is
/// one, else the v1 hierarchies of memory, cpu, cpuacct and pids.
fn hierarchies() -> &'static [Hierarchy] {
    static FOUND: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let read = |path| fs::read_to_string(path).unwrap_or_default();
        detect(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"))
    })
}

fn detect(mountinfo: &str, own_groups: &str) -> Vec<Hierarchy> {
    // mountinfo: `id parent dev root mount-point options [optional…] - fstype source super-options`.
    let mounts: Vec<(PathBuf, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let options = after.nth(1)?;
            Some((PathBuf::from(mount), fstype, options))
        })
        .collect();
    // /proc/self/cgroup: `hierarchy-id:controllers:path`, v2 as `0::path`.
    let own_path = |wanted: &dyn Fn(&str) -> bool| {
        own_groups.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            wanted(controllers).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let own_dir =
        |mount: &Path, path: Option<String>| path.map(|p| mount.join(p)).filter(|dir| dir.is_dir());

    for (mount, fstype, _) in &mounts {
        if *fstype != "cgroup2" {
            continue;
        }
        let available = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let mut controllers: Vec<Controller> = available
            .split_whitespace()
            .filter_map(Controller::from_name)
            .filter(|c| *c != Controller::CpuAcct)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        controllers.push(Controller::CpuAcct);
        return vec![Hierarchy {
            own: own_dir(mount, own_path(&|c| c.is_empty())),
            mount: mount.clone(),
            controllers,
            v2: true,
        }];
    }

    mounts
        .iter()
        .filter(|(_, fstype, _)| *fstype == "cgroup")
        .filter_map(|(mount, _, options)| {
            let controllers: Vec<Controller> = options
                .split(',')
                .filter_map(Controller::from_name)
                .collect();
            if controllers.is_empty() {
                return None;
            }
            let path = own_path(&|listed| {
                listed
                    .split(',')
                    .any(|c| controllers.iter().any(|ours| ours.name() == c))
            });
            Some(Hierarchy {
                own: own_dir(mount, path),
                mount: mount.clone(),
                controllers,
                v2: false,
            })
        })
        .collect()
}

/// The group of one instance or task: a leaf directory in each usable hierarchy.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dirs: Vec<GroupDir>,
    memory_limit: Option<u64>,
    unenforced: Option<String>,
}

#[derive(Debug)]
struct GroupDir {
    path: PathBuf,
    hierarchy: &'static Hierarchy,
}

impl GroupDir {
    fn has(&self, controller: Controller) -> bool {
        self.hierarchy.controllers.contains(&controller)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), SupervisorError> {
        let path = self.path.join(file);
        fs::write(&path, value).map_err(|source| SupervisorError::Cgroup { path, source })
    }

    fn write_limits(&self, spec: &CgroupSpec) -> Result<(), SupervisorError> {
        let v2 = self.hierarchy.v2;
        if let Some(bytes) = spec.memory
            && self.has(Controller::Memory)
        {
            let bytes = bytes.to_string();
            if v2 {
                self.write("memory.max", &bytes)?;
                // Without swap the limit is the whole story; where swap exists, it would only
                // postpone the kill. Absent when the kernel does not account swap.
                ignore_missing(self.write("memory.swap.max", "0"))?;
            } else {
                self.write("memory.limit_in_bytes", &bytes)?;
                ignore_missing(self.write("memory.memsw.limit_in_bytes", &bytes))?;
            }
        }
        if let Some(cores) = spec.cpu
            && self.has(Controller::Cpu)
        {
            // Rounded to whole microseconds; the kernel's minimum quota is 1 ms.
            let quota = ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000);
            if v2 {
                self.write("cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                self.write("cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                self.write("cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(pids) = spec.pids
            && self.has(Controller::Pids)
        {
            self.write("pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    fn read_number(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The value of `key` in a file of `key value` lines (memory.events, cpu.stat …).
    fn read_keyed(&self, file: &str, key: &str) -> Option<u64> {
        fs::read_to_string(self.path.join(file))
            .ok()?
            .lines()
            .find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
    }
}

const CPU_PERIOD_US: u64 = 100_000;

fn ignore_missing(result: Result<(), SupervisorError>) -> Result<(), SupervisorError> {
    match result {
        Err(SupervisorError::Cgroup { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(())
        }
        other => other,
    }
}

fn validate(spec: &CgroupSpec) -> Result<(), SupervisorError> {
    let invalid = |reason| SupervisorError::InvalidCgroup {
        name: spec.name.clone(),
        reason,
    };
    if !valid_name(&spec.name) {
        return Err(invalid(
            "the name must be 1 to 100 characters of a-z, 0-9 and '-'",
        ));
    }
    if spec
        .cpu
        .is_some_and(|cores| !(cores.is_finite() && cores > 0.0))
    {
        return Err(invalid("cpu must be a positive number of cores"));
    }
    if spec.memory == Some(0) || spec.pids == Some(0) {
        return Err(invalid(
            "a memory or pids limit of 0 would stop the app at once",
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The parents a group may be created under in a hierarchy: the daemon's own group, then the
/// mount's root.
fn bases(hierarchy: &Hierarchy) -> impl Iterator<Item = &Path> {
    hierarchy
        .own
        .as_deref()
        .filter(|own| *own != hierarchy.mount)
        .into_iter()
        .chain([hierarchy.mount.as_path()])
}

/// Creates `<base>/turnout/<name>` (for v2 with the controllers enabled down to it) under the
/// first base where that works.
fn make_parent(hierarchy: &Hierarchy, name: &str) -> io::Result<PathBuf> {
    let mut failure = None;
    for base in bases(hierarchy) {
        let parent = base.join("turnout").join(name);
        let made = fs::create_dir_all(&parent).and_then(|()| {
            if !hierarchy.v2 {
                return Ok(());
            }
            // v2 hands a controller to a group only when its parent enables it for its children.
            let enable = hierarchy
                .controllers
                .iter()
                .filter(|c| **c != Controller::CpuAcct)
                .map(|c| format!("+{}", c.name()))
                .collect::<Vec<_>>()
                .join(" ");
            for dir in [base.to_owned(), base.join("turnout"), parent.clone()] {
                fs::write(dir.join("cgroup.subtree_control"), &enable)?;
            }
            Ok(())
        });
        match made {
            Ok(()) => return Ok(parent),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.unwrap_or_else(|| io::ErrorKind::NotFound.into()))
}

/// Removes the empty groups that an earlier run of the daemon left under `parent` (a daemon that
/// was killed does not remove its groups). Groups of a process still running are left alone: one
/// may be empty only for now, between a crash and its restart, or between its making and its
/// process joining it (a run of the daemon's beside an instance its supervising process starts).
fn remove_leftovers(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let leaf = entry.file_name();
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && !leaf.to_str().is_some_and(token_of_a_live_process)
        {
            match fs::remove_dir(entry.path()) {
                Ok(()) => {
                    debug!(group = %entry.path().display(), "removed a group left by an earlier run")
                }
                Err(e) => {
                    debug!(group = %entry.path().display(), error = %e, "left an earlier run's group alone")
                }
            }
        }
    }
}

impl Cgroup {
    /// Creates the group `turnout/<name>/<leaf>` and writes the plan's limits. Where no usable
    /// hierarchy has a controller the plan needs, the group is created without that limit and
    /// [`Cgroup::unenforced`] says why (warned about once per daemon run); a limit that cannot be
    /// written into an existing group is an error.
    pub(crate) fn create(spec: &CgroupSpec, leaf: &str) -> Result<Cgroup, SupervisorError> {
        validate(spec)?;
        let mut dirs = Vec::new();
        let mut failures = Vec::new();
        for hierarchy in hierarchies() {
            let made = make_parent(hierarchy, &spec.name).and_then(|parent| {
                remove_leftovers(&parent);
                let path = parent.join(leaf);
                fs::create_dir(&path)?;
                Ok(path)
            });
            match made {
                Ok(path) => dirs.push(GroupDir { path, hierarchy }),
                Err(e) => failures.push(format!("{}: {e}", hierarchy.mount.display())),
            }
        }
        let wanted = [
            (spec.memory.is_some(), Controller::Memory),
            (spec.cpu.is_some(), Controller::Cpu),
            (spec.pids.is_some(), Controller::Pids),
        ];
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(wanted, c)| *wanted && !dirs.iter().any(|d| d.has(*c)))
            .map(|(_, c)| c.name())
            .collect();
        let unenforced = (!missing.is_empty()).then(|| {
            let why = if failures.is_empty() {
                "not mounted".to_owned()
            } else {
                failures.join("; ")
            };
            format!(
                "no usable cgroup controller for {} ({why})",
                missing.join(", ")
            )
        });
        if let Some(reason) = &unenforced {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| warn!(reason = %reason, "resource limits are not enforced"));
        }
        let group = Cgroup {
            dirs,
            memory_limit: spec.memory,
            unenforced,
        };
        match group.dirs.iter().try_for_each(|dir| dir.write_limits(spec)) {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove_now();
                Err(e)
            }
        }
    }

    /// Why some limit of the plan is not in force; None when all of them are.
    pub(crate) fn unenforced(&self) -> Option<&str> {
        self.unenforced.as_deref()
    }

    /// The files through which a child joins the group: each hierarchy's `cgroup.procs`, opened
    /// here because the child, between fork and exec, may only write.
    pub(crate) fn open_procs(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|dir| {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(dir.path.join("cgroup.procs"))?;
                Ok(OwnedFd::from(file))
            })
            .collect()
    }

    /// How many processes the kernel has killed in this group for its memory limit.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let dir = self.dirs.iter().find(|d| d.has(Controller::Memory))?;
        if dir.hierarchy.v2 {
            dir.read_keyed("memory.events", "oom_kill")
        } else {
            dir.read_keyed("memory.oom_control", "oom_kill")
        }
    }

    /// Whether a process that ended with `exit` was killed for the group's memory limit: it died
    /// of SIGKILL (or is a shell reporting a child that did, status 137) and the group's count of
    /// such kills rose since `before`.
    pub(crate) fn killed_for_memory(&self, exit: ExitStatus, before: Option<u64>) -> bool {
        let sigkill = exit.signal() == Some(9) || exit.code() == Some(128 + 9);
        sigkill && matches!((before, self.oom_kills()), (Some(before), Some(now)) if now > before)
    }

    /// How an instance or task killed for its memory limit is described.
    pub(crate) fn oom_description(&self) -> String {
        match self.memory_limit {
            Some(bytes) => format!("OOM: killed at its memory limit ({})", fmt_bytes(bytes)),
            None => "OOM: killed at its memory limit".to_owned(),
        }
    }

    pub(crate) fn usage(&self) -> ResourceUsage {
        let with = |c| self.dirs.iter().find(|d| d.has(c));
        let memory_bytes = with(Controller::Memory).and_then(|d| {
            d.read_number(if d.hierarchy.v2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            })
        });
        let pids = with(Controller::Pids).and_then(|d| d.read_number("pids.current"));
        let cpu_seconds = with(Controller::CpuAcct).and_then(|d| {
            if d.hierarchy.v2 {
                d.read_keyed("cpu.stat", "usage_usec")
                    .map(|us| us as f64 / 1e6)
            } else {
                d.read_number("cpuacct.usage").map(|ns| ns as f64 / 1e9)
            }
        });
        ResourceUsage {
            memory_bytes,
            pids,
            cpu_seconds,
        }
    }

    /// Removes the group once its processes are gone, then its environment's directory if no
    /// other group is left in it. The kernel may count a process that has just been reaped a
    /// moment longer, so a busy group is retried until [`KILL_GRACE`] has passed.
    pub(crate) async fn remove(&self) {
        let deadline = Instant::now() + KILL_GRACE;
        let mut pause = Duration::from_millis(1);
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(&dir.path) {
                    Err(e)
                        if e.raw_os_error() == Some(nix::libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                    result => {
                        report_removal(&dir.path, result);
                        break;
                    }
                }
            }
            remove_if_empty(dir.path.parent());
        }
    }

    /// [`Cgroup::remove`] for a group no process ever joined.
    fn remove_now(&self) {
        for dir in &self.dirs {
            report_removal(&dir.path, fs::remove_dir(&dir.path));
            remove_if_empty(dir.path.parent());
        }
    }
}

fn report_removal(path: &Path, result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(group = %path.display(), error = %e, "could not remove cgroup"),
    }
}

/// Removes an environment's directory unless a group is still in it.
fn remove_if_empty(parent: Option<&Path>) {
    if let Some(parent) = parent {
        let _ = fs::remove_dir(parent);
    }
}

/// Removes the groups `turnout/<name>/…` that no process is in any more, e.g. those a killed
/// daemon left (call it after [`crate::reap_stale`]), or when an environment is deleted. Groups
/// that still hold processes are left with a warning. A name that no plan could have is ignored.
pub fn remove_cgroup(name: &str) {
    if !valid_name(name) {
        return;
    }
    for hierarchy in hierarchies() {
        for base in bases(hierarchy) {
            let parent = base.join("turnout").join(name);
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    report_removal(&entry.path(), fs::remove_dir(entry.path()));
                }
            }
            report_removal(&parent, fs::remove_dir(&parent));
        }
    }
}

/// "64 MiB", "1.5 GiB", "1000 bytes".
fn fmt_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && (u128::from(bytes) * 10).is_multiple_of(u128::from(GIB)) {
        format!("{} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /nonexistent/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_hierarchies_are_found_with_their_controllers() {
        let found = detect(MOUNTINFO, "4:memory:/a/b\n1:cpu:/\n0::/\n");
        let names: Vec<(&str, Vec<Controller>, bool)> = found
            .iter()
            .map(|h| (h.mount.to_str().unwrap(), h.controllers.clone(), h.v2))
            .collect();
        assert_eq!(
            names,
            [
                ("/sys/fs/cgroup/cpu", vec![Controller::Cpu], false),
                ("/sys/fs/cgroup/cpuacct", vec![Controller::CpuAcct], false),
                ("/sys/fs/cgroup/memory", vec![Controller::Memory], false),
                ("/sys/fs/cgroup/pids", vec![Controller::Pids], false),
            ]
        );
    }

    #[test]
    fn only_groups_of_processes_that_are_gone_are_leftovers() {
        let ours = crate::process::new_token();
        assert!(token_of_a_live_process(&ours));
        // Above any pid_max: no such process.
        assert!(!token_of_a_live_process("18ab-7ffffff0-0"));
        assert!(!token_of_a_live_process("garbled"));
    }

    #[test]
    fn plans_are_validated() {
        let plan = |name: &str, cpu| CgroupSpec {
            name: name.to_owned(),
            memory: None,
            cpu,
            pids: None,
        };
        assert!(validate(&plan("shop-prod", Some(0.5))).is_ok());
        for bad in ["", "Shop", "shop/prod", "..", "shop_prod"] {
            assert!(validate(&plan(bad, None)).is_err(), "{bad:?}");
        }
        assert!(validate(&plan("shop", Some(f64::NAN))).is_err());
        assert!(validate(&plan("shop", Some(0.0))).is_err());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(fmt_bytes(64 << 20), "64 MiB");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
        assert_eq!(fmt_bytes(1000), "1000 bytes");
    }
}
