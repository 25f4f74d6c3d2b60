//! gRPC services: each validates a request, converts it to domain calls, and
//! converts the answer back. No business logic lives here.

pub mod acls;
pub mod admin;
pub mod cluster;
pub mod consume;
pub mod deliver;
pub mod events;
pub mod groups;
pub mod produce;
pub mod scaler;
pub mod schedules;
pub mod status;
pub mod validate;
