//! The control plane: what runs in the background, on the main thread's runtime, under the
//! task tree `app.rs` owns. It follows the store and publishes what the data plane needs in
//! [`crate::data::plane`]'s snapshot.

pub mod acme;
pub mod events;
pub mod files;
pub mod replicas;
pub mod store;
pub mod watcher;
