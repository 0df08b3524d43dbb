//! What the daemon keeps on disk: the SQLite database and the build logs.

pub mod logs;
mod migrations;
pub mod store;
