//! keepsh: an SSH server whose shells outlive the connection.
//!
//! The tour, in the order a connection travels:
//! the [`server`] accepts a connection ([`penalty`] refuses sources that
//! misbehaved, [`admission`] limits those not yet authenticated) and
//! configures russh (with the [`algorithms`] of `server.toml`) → the [`front`]
//! turns SSH requests (`pty-req`, `shell`, `exec`, `window-change`, data)
//! into [`command`]s → the [`registry`] finds or creates the user's
//! [`session`], which runs in its own process → the channel attaches over
//! the session's Unix socket ([`remote`]), speaking the messages of
//! [`protocol`] → the session pumps PTY output into its ring buffer and out
//! to every attachment; a dropped connection only detaches, and a server
//! that dies or restarts loses no session. [`config`] reads `server.toml`, [`auth`] checks passwords and
//! keys, [`keys`] manages key files, [`state_dir`] the private directory
//! where the session processes' sockets live, [`lost`] the sessions whose
//! process ended without a clean end, found from their history files;
//! [`logging`], [`memory`] (freed heap given back to the system),
//! [`child`] (child processes reaped through pidfds, without tokio's
//! signal handling) and [`reactor`] (a descriptor registered with tokio)
//! serve both executables.

pub mod admission;
pub mod algorithms;
pub mod auth;
pub mod child;
pub mod command;
pub mod config;
pub mod front;
pub mod keys;
pub mod logging;
pub mod lost;
pub mod memory;
pub mod penalty;
pub mod protocol;
pub mod reactor;
pub mod registry;
pub mod remote;
pub mod server;
pub mod session;
#[cfg(test)]
mod shape;
pub mod state_dir;
pub mod strict_modes;
