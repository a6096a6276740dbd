//! The write half of a TCP-side session's WebSocket, in a task of its own so that a client
//! that stops reading cannot freeze the session's driver: the driver keeps serving its
//! timers, the application's close and the server's shutdown while a write is pending, and
//! a write that makes no progress within the deadline ends the session.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_tungstenite::tungstenite::{Error, Message};

/// Messages that may wait for the writer: enough to overlap work, few enough that a stalled
/// client stalls the application (backpressure) instead of growing a queue.
const QUEUE: usize = 16;

/// The driver's end of the writer task.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Message>>,
    failed: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Moves `sink` into a task that writes what it is given, each batch within `deadline`.
    pub(crate) fn spawn<K>(sink: K, deadline: Duration) -> Self
    where
        K: futures_util::Sink<Message, Error = Error> + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (failed_tx, failed) = watch::channel(None);
        let task = tokio::spawn(write_loop(sink, rx, deadline, failed_tx));
        Self {
            tx: Some(tx),
            failed,
            task,
        }
    }

    /// Whether a message can be queued now without waiting.
    pub(crate) fn has_room(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.capacity() > 0)
    }

    /// Queues a message if there is room; gives it back otherwise.
    pub(crate) fn try_send(&self, m: Message) -> Result<(), Message> {
        match &self.tx {
            Some(tx) => tx.try_send(m).map_err(|e| match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            }),
            None => Err(m),
        }
    }

    /// Resolves once there is room for a message (never, if the writer has stopped: its
    /// failure is reported by [`failed`](Self::failed)).
    pub(crate) async fn room(&self) {
        match &self.tx {
            Some(tx) => match tx.reserve().await {
                Ok(permit) => drop(permit),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Resolves with the reason once a write failed or missed its deadline.
    pub(crate) async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        let why = failed
            .wait_for(Option::is_some)
            .await
            .ok()
            .map(|w| w.clone());
        match why {
            Some(why) => why.unwrap_or_default(),
            None => std::future::pending().await,
        }
    }

    /// Lets what is queued go out and closes the WebSocket's write half, giving up at
    /// `by`.
    pub(crate) async fn finish(mut self, by: Instant) {
        self.tx.take();
        if tokio::time::timeout_at(by, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A driver that ends without `finish` (its task cancelled) drops the socket now.
        if self.tx.is_some() {
            self.task.abort();
        }
    }
}

async fn write_loop<K>(
    mut sink: K,
    mut rx: mpsc::Receiver<Message>,
    deadline: Duration,
    failed: watch::Sender<Option<String>>,
) where
    K: futures_util::Sink<Message, Error = Error> + Unpin,
{
    while let Some(first) = rx.recv().await {
        // What is queued now goes out as one batch, flushed once; later messages wait for
        // the next batch, so that a client reading slowly but steadily meets each deadline.
        let more = rx.len();
        let batch = async {
            sink.feed(first).await?;
            for _ in 0..more {
                match rx.try_recv() {
                    Ok(m) => sink.feed(m).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await
        };
        let why = match tokio::time::timeout(deadline, batch).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("write failed: {e}"),
            Err(_) => format!(
                "a write did not complete within {} s: the client is not reading",
                deadline.as_secs_f32()
            ),
        };
        failed.send_replace(Some(why));
        return;
    }
    let _ = tokio::time::timeout(deadline, sink.close()).await;
}

/// Sleeps until `at`, or forever when there is no deadline.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
