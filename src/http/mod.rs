//! The HTTP side: the listeners and their connections, who may do what
//! (the token, the hook's socket), the `Host` check, the share of
//! connections long-lived answers may hold, the web page and the JSON API.

pub mod api;
pub mod auth;
pub mod hosts;
pub mod listener;
pub mod streams;
pub mod web;
