//! The C allocator's settings for a process that streams blobs.
//!
//! A fill's chunks outlive the read that produced them (they sit in the followers' window,
//! the hashing queue and the disk writer's queue), so hyper cannot reuse its read buffer
//! and allocates a fresh one, ≈ 400 KiB, for nearly every read. glibc's defaults serve
//! such a block with `mmap` (over 128 KiB) or, once its adaptive threshold has risen, from
//! an arena whose free top it hands back to the kernel as soon as it exceeds twice that
//! block: either way every received byte lands on a freshly faulted, zeroed page. Measured
//! on a cold 512 MiB pull (`python3 benches/profile_cold.py --cpu`, benches/RESULTS.md):
//! 49–80 k minor faults, against ≈ 7 k with the settings below, and ≈ 12 % less of the
//! daemon's CPU with them. Keeping up to `TRIM_THRESHOLD` of freed memory per arena costs no more than the
//! peak already used; `release_idle` hands it back when no fill is running.

use std::time::Duration;

/// Blocks up to this size come from the arenas (reused), not from their own `mmap`.
const MMAP_THRESHOLD: i32 = 1 << 20;
/// Free memory at an arena's top kept for the next reads instead of handed back at once.
const TRIM_THRESHOLD: i32 = 16 << 20;
/// How often an idle daemon hands its allocator's free memory back to the kernel.
const RELEASE_EVERY: Duration = Duration::from_secs(30);

/// Set the allocator up for streaming; call once, first thing in `main`.
#[allow(unsafe_code)] // glibc's mallopt (SAFETY below)
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; called before any thread
    // starts, and glibc takes its own lock for it anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Every `RELEASE_EVERY`, while `idle()` says no fill is running, hand the allocator's free
/// pages back to the kernel, so the memory a burst of pulls used does not stay resident.
pub fn spawn_release_idle(idle: impl Fn() -> bool + Send + 'static) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELEASE_EVERY).await;
            if idle() {
                // Walks every arena: off the runtime.
                let _ = tokio::task::spawn_blocking(release).await;
            }
        }
    });
}

#[allow(unsafe_code)] // glibc's malloc_trim (SAFETY below)
fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
