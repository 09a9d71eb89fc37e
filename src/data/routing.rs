//! Routing: Traefik rules ([`rule`]) and the immutable routing table ([`table`]) that picks a
//! router for each request.

pub mod rule;
pub mod table;

pub use rule::{RequestView, Rule};
pub use table::{Route, Table};
