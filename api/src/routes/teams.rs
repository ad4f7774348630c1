//! Teams and their members.
