//! Routing: Traefik rules ([`rule`]) and, as it lands, the immutable routing table that picks a
//! router for each request.

pub mod rule;
