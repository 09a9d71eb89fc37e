//! A TCP relay on a free loopback port that the test switches: holding, it accepts connections
//! and keeps them without a byte (a validation that hangs); refusing, it closes them at once (a
//! validation that fails); open, it relays them to a target port until it is switched. Pebble's
//! validation port points at a gate when a test must control when, and by whom, a challenge is
//! answered. The connections held so far can be let through later, as a validation that was
//! slow rather than lost.

use std::sync::{Arc, Mutex};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

const HOLD: u32 = 0;
const REFUSE: u32 = 1;

pub struct Gate {
    pub port: u16,
    state: watch::Sender<u32>,
    held: Arc<Mutex<Vec<TcpStream>>>,
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
        let (state, watching) = watch::channel(HOLD);
        let held = Arc::new(Mutex::new(Vec::new()));
        let holding = held.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let now = *watching.borrow();
                match now {
                    HOLD => holding.lock().unwrap().push(client),
                    REFUSE => drop(client),
                    port => relay(client, port, watching.clone()),
                }
            }
        });
        Gate { port, state, held, task }
    }

    /// Relays the connections held so far, and new ones, to `port`: what their clients sent
    /// while held is delivered then.
    pub fn release_held_to(&self, port: u16) {
        self.open_to(port);
        for client in self.held.lock().unwrap().drain(..) {
            relay(client, u32::from(port), self.state.subscribe());
        }
    }

    /// Relays new connections to `port` from now on.
    pub fn open_to(&self, port: u16) {
        self.state.send_replace(u32::from(port));
    }

    /// Closes new connections at once from now on, and the held and relayed ones too.
    pub fn refuse(&self) {
        self.state.send_replace(REFUSE);
        self.held.lock().unwrap().clear();
    }
}

/// A relayed connection lives only while the gate stays open to its port: a client keeping it
/// alive (Pebble's validator does) must not get through a gate that has since been switched.
fn relay(mut client: TcpStream, port: u32, mut switched: watch::Receiver<u32>) {
    tokio::spawn(async move {
        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port as u16)).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = switched.wait_for(|state| *state != port) => {}
        }
    });
}
