//! Admin commands that run without the server: user edits, catalog maintenance, config
//! checks and the import of the Python archiver's users.

pub mod catalog;
pub mod check_config;
pub mod import_users;
pub mod user;
