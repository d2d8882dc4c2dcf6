//! Giving the heap a burst freed back to the kernel. The task `release_freed` owns nothing but
//! a timer.
//!
//! glibc's malloc returns freed memory to the kernel only from the top of its heap (and grows
//! its mmap threshold after large frees, so later large buffers land in the heap too): after a
//! 10,000-order snapshot or a backlog written to Postgres the process keeps its peak RSS though
//! it no longer holds that memory. Every `EVERY`, when the heap's free bytes exceed `SLACK` and
//! have grown by `SLACK` since the last trim, `malloc_trim(0)` gives the free pages back; the
//! settled RSS then follows what the daemon holds. The growth rule matters: a trim walks the
//! whole heap on this one thread (2 ms for a fragmented 100 MB heap, 8–11 ms for 300 MB,
//! measured), and a fragmented heap always has free bytes, so trimming on free bytes alone
//! paused every account every 5 s. Other C libraries: a no-op.

use std::time::Duration;

/// How often the heap is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Free heap bytes kept without trimming.
const SLACK: usize = 2 << 20;

/// Runs for the life of the process.
pub async fn release_freed() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut at_last_trim = 0;
    loop {
        tick.tick().await;
        if let Some(released) = trim_if_grown(SLACK, &mut at_last_trim) {
            tracing::debug!(
                released_bytes = released,
                "heap: freed memory returned to the kernel"
            );
        }
    }
}

/// Trims when more than `slack` bytes are free and `slack` more than at the last trim
/// (`at_last_trim`, updated; it follows the free bytes down when the heap reuses them); the
/// free bytes it found, if it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_if_grown(slack: usize, at_last_trim: &mut usize) -> Option<usize> {
    // SAFETY: both are plain glibc calls without arguments that point anywhere; they only
    // read and reorganise malloc's own bookkeeping under its locks.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if !due(free, slack, at_last_trim) {
        return None;
    }
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    Some(free)
}

/// Whether `free` bytes call for a trim (see `trim_if_grown`); if so, `at_last_trim` becomes
/// `free`.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn due(free: usize, slack: usize, at_last_trim: &mut usize) -> bool {
    *at_last_trim = (*at_last_trim).min(free);
    if free <= slack || free <= at_last_trim.saturating_add(slack) {
        return false;
    }
    *at_last_trim = free;
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_if_grown(_slack: usize, _at_last_trim: &mut usize) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    /// A trim is due above the slack, once per growth of the free bytes by the slack; the
    /// mark follows the free bytes down when the heap reuses them.
    #[test]
    fn a_trim_is_due_once_per_growth() {
        let mb = 1 << 20;
        let mut last = 0;
        assert!(!super::due(mb, 2 * mb, &mut last), "within the slack");
        assert!(super::due(30 * mb, 2 * mb, &mut last), "grown past it");
        assert!(
            !super::due(31 * mb, 2 * mb, &mut last),
            "the same free memory again"
        );
        assert!(super::due(33 * mb, 2 * mb, &mut last), "grown again");
        assert!(
            !super::due(5 * mb, 2 * mb, &mut last),
            "reused: the mark comes down"
        );
        assert!(
            super::due(8 * mb, 2 * mb, &mut last),
            "and a new burst is trimmed"
        );
    }

    /// The glibc calls run: freed memory is found above a small slack.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_is_found_and_trimmed() {
        // Many small blocks (below the mmap threshold: they live in the heap), every other
        // one freed: 16 MiB of holes glibc cannot give back by itself (its own trim on free
        // only shrinks the top of the heap).
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..64 * 1024).map(|_| Some(vec![1u8; 512])).collect();
        for b in blocks.iter_mut().step_by(2) {
            *b = None;
        }
        let mut last = 0;
        assert!(super::trim_if_grown(usize::MAX, &mut last).is_none());
        let found = super::trim_if_grown(1 << 20, &mut last).expect("16 MiB of holes");
        assert!(found > 1 << 20, "{found}");
        drop(blocks);
    }
}
