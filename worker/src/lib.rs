//! The stateless worker of the scan fleet: takes SubJobs from the queue, runs the scanner, normalises
//! and stores what it found, and rolls the run up. Built as a library so that tests run the same code.

pub mod app;
pub mod artifacts;
pub mod config;
pub mod ledger;
pub mod metrics;
pub mod pipeline;
pub mod poll;
pub mod runner;
pub mod tools;

/// The worker's allocator, for every program built on this library (the `cspm-worker` binary, the
/// benchmarks, the tests): parsers allocate findings on their own thread and the store frees them on a
/// runtime thread, which mimalloc handles without the lock contention glibc's arenas showed there
/// (a fifth of the parse time). Its transparent huge pages are off (`no_thp`): with them an idle worker
/// held 26 MB instead of 14.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
