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
