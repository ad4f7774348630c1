//! Stores: typed documents and the operations on them. Every query of a team's data takes the team.

pub mod accounts;
pub mod findings;
pub mod results;
pub mod runs;
pub mod subjobs;
pub mod users;
