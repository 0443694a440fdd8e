//! The global allocator and its heap profiler.
//!
//! The default build uses jemalloc with its profiler compiled in (the `heap-profile`
//! feature). The `peregrine` binary
//! turns sampling on from the start (its `malloc_conf`), so `/debug/pprof/heap` can report
//! live allocations without a restart. Other programs that link this library, the tests
//! among them, run jemalloc without the profiler and get `NotEnabled`.

#[cfg(feature = "heap-profile")]
use std::sync::Arc;

#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!(
    "the `jemalloc` and `mimalloc` features each choose the global allocator: enable one"
);

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The reason a heap profile cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum HeapProfileError {
    #[error("this build has no heap profiler: it is built without the `heap-profile` feature")]
    Unsupported,
    #[error("jemalloc's profiler is not enabled")]
    NotEnabled,
    #[error("heap profile failed: {0:#}")]
    Failed(anyhow::Error),
}

/// Takes a heap profile of the live sampled allocations, as gzipped pprof protobuf.
#[cfg(feature = "heap-profile")]
pub async fn heap_profile() -> Result<Vec<u8>, HeapProfileError> {
    let Some(control) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err(HeapProfileError::NotEnabled);
    };
    let mut control = Arc::clone(control).lock_owned().await;
    if !control.activated() {
        return Err(HeapProfileError::NotEnabled);
    }
    // The dump writes a temporary file (under TMPDIR) and reads it back, so it runs on the
    // blocking pool.
    tokio::task::spawn_blocking(move || control.dump_pprof())
        .await
        .map_err(|err| HeapProfileError::Failed(err.into()))?
        .map_err(HeapProfileError::Failed)
}

/// Returns `Unsupported`, because this build has no heap profiler.
#[cfg(not(feature = "heap-profile"))]
pub async fn heap_profile() -> Result<Vec<u8>, HeapProfileError> {
    Err(HeapProfileError::Unsupported)
}
