//! Admin commands that run without the server: user edits and catalog maintenance.

pub mod catalog;
pub mod user;
