//! The C allocator settings that CPU extraction needs.
//!
//! libtorch allocates every intermediate tensor with the C `malloc`. glibc serves blocks above its mmap threshold
//! (at most 32 MiB even with its dynamic threshold) with a fresh `mmap`, and returns them with `munmap` when the
//! tensor is dropped. The large pyramid levels of a 1024 px photo (the x2 level is 2048 px; its first
//! EfficientNet-Lite tensors are about 100 MB each) are all above it, so every layer of every level maps fresh
//! pages and the kernel zero-fills them one 4 KiB fault at a time: on the 2-core development machine, half of the
//! extraction time was system time (docs/benchmarks.md, "Extraction: the C allocator").
//!
//! [`tune_for_tensors`] raises the mmap threshold to 1 GiB and turns heap trimming off, so freed tensor memory stays
//! in the process and is reused by the next layer. The cost is memory: the heap keeps what the largest pyramid level
//! needed instead of returning it, so the resident size of an extracting process stays at its peak (measured: 3.3
//! -> 4.4 GiB at 1024 px). A trim threshold of 1 GiB (the setting before 2026-12-04) still gave the top of the heap
//! back after each large level and faulted it in again for the next photo, which costs most where a page fault is
//! slow, as in virtual machines (docs/benchmarks.md, "Extraction: the C allocator").
//!
//! It also limits glibc to one arena. A thread other than `main` allocates from its own arena, whose heaps are at
//! most 64 MiB each; a larger block cannot come from such a heap and is mapped fresh whatever the threshold says.
//! Extraction runs off the main thread in the index build, the cluster worker and `delf serve`, where this follows
//! from glibc's design; its effect alone was not measured (`delf index build` did not move measurably with both
//! changes, docs/benchmarks.md, "Trimming off, one arena"). The cost is one lock for every thread's `malloc`, also
//! not measured under load.

/// glibc's mmap threshold (bytes) set by [`tune_for_tensors`].
pub const THRESHOLD_BYTES: i32 = 1 << 30;

/// What [`tune_for_tensors`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// The mmap threshold was raised to [`THRESHOLD_BYTES`], trimming turned off, and glibc keeps one arena.
    Raised,
    /// Left alone: `GLIBC_TUNABLES` names a `glibc.malloc` setting, which is the operator's choice.
    LeftToTunables,
    /// Left alone: not glibc (musl, macOS, Windows), whose allocators behave differently; nothing was measured there.
    Unsupported,
    /// glibc refused a setting.
    Refused,
}

/// Raises glibc's mmap threshold, turns heap trimming off and keeps one arena, for tensor-heavy work; call once,
/// early in `main`, before threads start.
/// Does nothing when `GLIBC_TUNABLES` sets any `glibc.malloc` tunable or on other C libraries.
pub fn tune_for_tensors() -> AllocatorTuning {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return AllocatorTuning::LeftToTunables;
    }
    raise()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn raise() -> AllocatorTuning {
    // SAFETY: mallopt only changes glibc's allocator parameters; it is documented as safe to call at any time, and
    // these take effect for later allocations only (the arena limit for threads that have not allocated yet).
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
            // -1: never trim (mallopt(3)).
            && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
            && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
    };
    if ok { AllocatorTuning::Raised } else { AllocatorTuning::Refused }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn raise() -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_thresholds() {
        // Only the outcome can be checked from here: glibc has no getter for these two parameters.
        let got = tune_for_tensors();
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
        {
            assert_eq!(got, AllocatorTuning::Raised);
        }
    }
}
