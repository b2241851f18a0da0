//! CPU time, memory, threads and open descriptors of a process, read from Linux's `/proc` through
//! the `procfs` crate. Clock ticks and pages are converted by the kernel's real tick rate
//! (`sysconf(_SC_CLK_TCK)`) and page size (`sysconf(_SC_PAGESIZE)`), not assumed to be 100 and
//! 4096. Elsewhere than Linux every reader returns an error.

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// CPU seconds spent in user mode (`utime`).
    pub user_seconds: f64,
    /// CPU seconds spent in the kernel on the process's behalf (`stime`).
    pub system_seconds: f64,
    /// User plus system CPU seconds, `process_cpu_seconds_total` in Prometheus terms.
    pub cpu_seconds: f64,
    /// Resident set size in bytes (`process_resident_memory_bytes`).
    pub resident_bytes: u64,
    /// Virtual memory size in bytes (`process_virtual_memory_bytes`).
    pub virtual_bytes: u64,
    /// Open file descriptors (`process_open_fds`); `None` when `/proc/<pid>/fd` may not be read
    /// (another user's process).
    pub open_fds: Option<u64>,
    /// Threads in the process.
    pub threads: u64,
    /// When the process started, in seconds since the UNIX epoch (`process_start_time_seconds`),
    /// to the kernel's tick; `None` when the boot time is unavailable.
    pub start_time_seconds: Option<f64>,
}

/// The calling process's resident set size in bytes, from `/proc/self/statm` alone: cheap enough
/// to read when admitting a connection (one small file, no descriptor walk).
pub fn resident_bytes() -> anyhow::Result<u64> {
    imp::resident_bytes()
}

impl ProcessStats {
    /// Reads the calling process (`/proc/self`).
    pub fn of_self() -> anyhow::Result<Self> {
        imp::of_self()
    }

    /// Reads process `pid` (`/proc/<pid>`).
    pub fn of_pid(pid: u32) -> anyhow::Result<Self> {
        imp::of_pid(pid)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use anyhow::Context;
    use procfs::process::Process;

    use super::ProcessStats;

    pub fn of_self() -> anyhow::Result<ProcessStats> {
        read(&Process::myself().context("opening /proc/self")?)
    }

    pub fn resident_bytes() -> anyhow::Result<u64> {
        let statm = Process::myself().context("opening /proc/self")?.statm().context("reading /proc/self/statm")?;
        Ok(statm.resident * procfs::page_size())
    }

    pub fn of_pid(pid: u32) -> anyhow::Result<ProcessStats> {
        let pid_t = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
        read(&Process::new(pid_t).with_context(|| format!("opening /proc/{pid}"))?)
    }

    fn read(process: &Process) -> anyhow::Result<ProcessStats> {
        let stat = process.stat().with_context(|| format!("reading /proc/{}/stat", process.pid))?;
        let ticks = procfs::ticks_per_second() as f64;
        let user_seconds = stat.utime as f64 / ticks;
        let system_seconds = stat.stime as f64 / ticks;
        Ok(ProcessStats {
            user_seconds,
            system_seconds,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss * procfs::page_size(),
            virtual_bytes: stat.vsize,
            open_fds: process.fd_count().ok().map(|n| n as u64),
            threads: u64::try_from(stat.num_threads).unwrap_or(0),
            start_time_seconds: procfs::boot_time_secs().ok().map(|boot| boot as f64 + stat.starttime as f64 / ticks),
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::ProcessStats;

    pub fn of_self() -> anyhow::Result<ProcessStats> {
        anyhow::bail!("process statistics are read from /proc, which only Linux has")
    }

    pub fn of_pid(_pid: u32) -> anyhow::Result<ProcessStats> {
        of_self()
    }

    pub fn resident_bytes() -> anyhow::Result<u64> {
        anyhow::bail!("resident memory is read from /proc, which only Linux has")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::*;

    /// Other tests run in parallel threads of this process, so a reading can move for reasons of
    /// theirs: each check retries until the expected change is seen alone.
    fn eventually(what: &str, mut attempt: impl FnMut() -> bool) {
        for _ in 0..50 {
            if attempt() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what}: never observed");
    }

    #[test]
    fn cpu_seconds_rise_after_burning_cpu() {
        let started = Instant::now();
        let before = ProcessStats::of_self().unwrap();
        assert!(before.cpu_seconds >= 0.0);
        assert!((before.cpu_seconds - (before.user_seconds + before.system_seconds)).abs() < 1e-9);
        // Spin until 200 ms of CPU (many clock ticks at any tick rate) show up, however loaded the
        // machine is; a wrong tick rate or a frozen reading never gets there or overshoots below.
        let mut x = 0u64;
        let burnt = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let burnt = ProcessStats::of_self().unwrap().cpu_seconds - before.cpu_seconds;
            if burnt >= 0.2 {
                break burnt;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "cpu_seconds rose by only {burnt} s in 20 s");
        };
        // No more CPU than the wall time allows for this and every other test thread.
        let cores = std::thread::available_parallelism().map_or(64, |n| n.get()) as f64;
        let wall = started.elapsed().as_secs_f64();
        assert!(burnt <= wall * cores + 0.05, "cpu_seconds rose by {burnt} s in {wall} s on {cores} cores");
    }

    #[test]
    fn resident_bytes_cover_touched_memory_and_stay_plausible() {
        const TOUCHED: usize = 64 << 20;
        let mut buffer = vec![0u8; TOUCHED];
        // Write every page so the kernel must back it with memory.
        for page in buffer.chunks_mut(1024) {
            page[0] = 1;
        }
        let stats = ProcessStats::of_self().unwrap();
        std::hint::black_box(&buffer);
        assert!(stats.resident_bytes >= TOUCHED as u64, "resident {} B < {TOUCHED} B touched", stats.resident_bytes);
        assert!(stats.resident_bytes < 64 << 30, "resident {} B", stats.resident_bytes);
        assert!(stats.virtual_bytes >= stats.resident_bytes);
        // A page-size or tick-rate mix-up would show as a multiple of the true size.
        assert!(stats.resident_bytes < (TOUCHED as u64) * 16, "resident {} B", stats.resident_bytes);
    }

    #[test]
    fn resident_bytes_rise_after_touching_memory() {
        let before = resident_bytes().unwrap();
        assert!(before > 0);
        // 64 MiB written page by page, so it is resident, not just reserved.
        let touched = vec![1u8; 64 << 20];
        eventually("resident memory up by at least 48 MiB", || resident_bytes().unwrap() >= before + (48 << 20));
        drop(std::hint::black_box(touched));
    }

    #[test]
    fn open_fds_rise_by_one_after_opening_a_file() {
        eventually("one more descriptor after opening a file, one fewer after closing it", || {
            let before = ProcessStats::of_self().unwrap().open_fds.unwrap();
            let file = std::fs::File::open("/proc/self/stat").unwrap();
            let during = ProcessStats::of_self().unwrap().open_fds.unwrap();
            drop(file);
            let after = ProcessStats::of_self().unwrap().open_fds.unwrap();
            during == before + 1 && after == before
        });
    }

    #[test]
    fn threads_rise_by_one_while_a_thread_runs() {
        eventually("one more thread while a spawned one runs, as many as before after it ends", || {
            let before = ProcessStats::of_self().unwrap().threads;
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let spawned = std::thread::spawn({
                let barrier = barrier.clone();
                move || {
                    barrier.wait();
                    barrier.wait();
                }
            });
            barrier.wait();
            let during = ProcessStats::of_self().unwrap().threads;
            barrier.wait();
            spawned.join().unwrap();
            let after = ProcessStats::of_self().unwrap().threads;
            before >= 1 && during == before + 1 && after == before
        });
    }

    #[test]
    fn start_time_is_recent() {
        let start = ProcessStats::of_self().unwrap().start_time_seconds.expect("boot time from /proc/stat");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        // Started in the past, and not long ago (the boot time has one-second resolution).
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start}, now {now}");
    }

    #[test]
    fn of_pid_reads_another_process() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        // Until the child has exec'd, its memory is in flux (shared with this process, then none).
        eventually("a single-threaded child with resident memory", || {
            let stats = ProcessStats::of_pid(child.id()).unwrap();
            stats.threads == 1 && stats.resident_bytes > 0 && stats.open_fds.is_some()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(ProcessStats::of_pid(std::process::id()).unwrap().threads >= 1);
        // A process that has exited and been reaped is gone.
        assert!(ProcessStats::of_pid(child.id()).is_err());
    }
}
