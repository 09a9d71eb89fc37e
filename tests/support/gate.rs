//! A TCP relay on a free loopback port that the test switches: holding, it accepts connections
//! and keeps them without a byte (a validation that hangs); refusing, it closes them at once (a
//! validation that fails); open, it relays them to a target port. Pebble's validation port points at a gate when a test must control when, and
//! by whom, a challenge is answered.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

const HOLD: u32 = 0;
const REFUSE: u32 = 1;

use tokio::net::{TcpListener, TcpStream};

pub struct Gate {
    pub port: u16,
    target: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gate {
    /// A gate that holds connections.
    pub async fn holding() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU32::new(HOLD));
        let relay = target.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                match relay.load(Ordering::SeqCst) {
                    HOLD => held.push(client),
                    REFUSE => drop(client),
                    port => {
                        let port = port as u16;
                        tokio::spawn(async move {
                            if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            }
                        });
                    }
                }
            }
        });
        Gate { port, target, task }
    }

    /// Relays new connections to `port` from now on.
    pub fn open_to(&self, port: u16) {
        self.target.store(u32::from(port), Ordering::SeqCst);
    }

    /// Closes new connections at once from now on.
    pub fn refuse(&self) {
        self.target.store(REFUSE, Ordering::SeqCst);
    }
}
