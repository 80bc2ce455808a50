//! A socket tap: a TCP proxy on loopback that forwards every connection to a target
//! port and keeps a copy of every byte, both ways. Nodes advertise the tap's port, so
//! all traffic between them crosses it: what a capture on the wire would see.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Tap {
    pub port: u16,
    captured: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    /// Listen on `port` and forward to `127.0.0.1:target`.
    pub fn start(port: u16, target: u16) -> Tap {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind tap");
        let captured: Arc<Mutex<Vec<u8>>> = Arc::default();
        let cap = captured.clone();
        std::thread::spawn(move || {
            for inbound in l.incoming().flatten() {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let cap = cap.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    cap.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Tap { port, captured }
    }

    /// Everything that crossed the tap so far.
    pub fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
