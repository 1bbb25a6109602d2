//! End-to-end tests: the real `keepsh` binary on 127.0.0.1, driven by the
//! real OpenSSH client and an in-process russh client. One test binary, one
//! small harness, a file per behaviour.

mod harness;
mod tmux;

mod algorithms;
mod auth;
mod bad_input;
mod channels;
mod commands;
mod differential;
mod fidelity;
mod first_run;
mod history_file;
mod hygiene;
mod in_process;
mod isolation;
mod libraries;
mod lifetimes;
mod notify;
mod putty;
mod reattach;
mod screen;
mod send;
mod sftp;
mod shell;
mod slow_clients;
mod survival;
mod watch;
