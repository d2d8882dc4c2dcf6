//! Giving the heap a burst freed back to the kernel. The task `release_freed` owns nothing but
//! a timer.
//!
//! glibc's malloc returns freed memory to the kernel only from the top of its heap (and grows
//! its mmap threshold after large frees, so later large buffers land in the heap too): after a
//! 10,000-order snapshot or a backlog written to Postgres the process keeps its peak RSS though
//! it no longer holds that memory. Every `EVERY`, when the heap's free bytes exceed `SLACK`,
//! `malloc_trim(0)` gives the free pages back; the settled RSS then follows what the daemon
//! holds. A busy daemon reuses its free memory before the check (it stays under `SLACK`), so
//! trimming does not fight the allocator under load. Other C libraries: a no-op.

use std::time::Duration;

/// How often the heap is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Free heap bytes kept without trimming.
const SLACK: usize = 2 << 20;

/// Runs for the life of the process.
pub async fn release_freed() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(released) = trim_if_slack(SLACK) {
            tracing::debug!(
                released_bytes = released,
                "heap: freed memory returned to the kernel"
            );
        }
    }
}

/// Trims when more than `slack` bytes are free; the free bytes it found, if it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_if_slack(slack: usize) -> Option<usize> {
    // SAFETY: both are plain glibc calls without arguments that point anywhere; they only
    // read and reorganise malloc's own bookkeeping under its locks.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free <= slack {
        return None;
    }
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    Some(free)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_if_slack(_slack: usize) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    /// Freed memory above the slack is found and trimmed; a heap within it is left alone.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trims_only_above_the_slack() {
        // Many small blocks (below the mmap threshold: they live in the heap), then freed.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|_| vec![1u8; 512]).collect();
        drop(blocks);
        assert!(super::trim_if_slack(usize::MAX).is_none());
        let found = super::trim_if_slack(1 << 20).expect("32 MiB were freed");
        assert!(found > 1 << 20, "{found}");
    }
}
