//! The CPU time the coordinator's own threads used, read from `/proc/self/task`: the bench
//! runs the coordinator in this process beside the simulated runners, so the process's total
//! says nothing about what a change costs the coordinator. Its threads are told apart by name:
//! the coordinator's runtime is named `coordinator`, the store's and the log's threads
//! `muster-...`.

use anyhow::Context;

/// Seconds of CPU (user and system) used so far by the threads of this process whose name
/// marks them as the coordinator's.
pub(crate) fn coordinator_cpu_seconds() -> anyhow::Result<f64> {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("read the clock tick rate")?
        .context("the system has no clock tick rate")? as f64;
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").context("list this process's threads")? {
        let task = task.context("read a thread entry")?.path();
        // A thread may end between the listing and the read: it is simply not counted.
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        let name = name.trim_end();
        if !(name.starts_with("coordinator") || name.starts_with("muster-")) {
            continue;
        }
        ticks += user_and_system_ticks(&stat)
            .with_context(|| format!("parse {}", task.join("stat").display()))?;
    }
    Ok(ticks as f64 / ticks_per_second)
}

/// `utime` + `stime` (fields 14 and 15) of a `/proc/.../stat` line. The second field, the
/// name in parentheses, may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn user_and_system_ticks(stat: &str) -> anyhow::Result<u64> {
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .context("no ')' after the thread's name")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is at index 0, so field N is at index N - 3.
    let field = |number: usize| -> anyhow::Result<u64> {
        fields
            .get(number - 3)
            .context("too few fields")?
            .parse()
            .with_context(|| format!("field {number} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (coordinator (x) 1) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(user_and_system_ticks(stat).expect("parse"), 333);
        assert!(user_and_system_ticks("4242 (short) S 1 2").is_err());
    }

    #[test]
    fn this_process_coordinator_threads_are_counted() {
        let busy = std::thread::Builder::new()
            .name("muster-busy".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut spin = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    spin = std::hint::black_box(spin.wrapping_add(1));
                }
                coordinator_cpu_seconds()
            })
            .expect("spawn a named thread");
        let seconds = busy
            .join()
            .expect("the thread ran")
            .expect("read the CPU time");
        assert!(
            seconds >= 0.1,
            "a thread named muster-* that spun 0.3 s: {seconds}"
        );
    }
}
