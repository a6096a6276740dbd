//! Ordinary requests handed to a thread outside the runtime (a language's event loop) in
//! batches, with one wake-up per batch.
//!
//! [`HttpRequests`](super::HttpRequests) hands requests to an awaiting task; a binding that
//! awaits it pays, per batch, a future resolved across threads (in Python, the interpreter
//! lock taken on a runtime thread). An [`HttpInbox`] is pushed to instead: the service puts
//! each request in a bounded list and calls the binding's `wake` only when the list goes
//! from seen to unseen; the language thread, woken, takes everything waiting with
//! [`HttpInbox::take`], a plain synchronous call. Under load, many requests arrive per
//! wake-up; no runtime thread ever waits on the language's thread.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::oneshot;

use super::{status_response, Body, HttpExchange, HttpService};

/// What the service and the inbox share.
struct Shared {
    list: Mutex<List>,
    /// Set when a wake-up is owed or sent and not yet answered by [`HttpInbox::take`].
    signalled: AtomicBool,
    /// Dropped once the service is gone: it may hold what keeps the language side (and
    /// the inbox) alive, such as a JavaScript callback.
    wake: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    capacity: usize,
}

#[derive(Default)]
struct List {
    waiting: VecDeque<HttpExchange>,
    /// The service is gone: nothing more will come.
    service_gone: bool,
    /// The inbox is gone: nobody will take what comes.
    inbox_gone: bool,
}

impl Shared {
    fn list(&self) -> MutexGuard<'_, List> {
        // A panic while the list is held cannot leave it half-changed: keep going.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self) {
        if !self.signalled.swap(true, Ordering::AcqRel) {
            if let Some(wake) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                wake();
            }
        }
    }
}

/// The language side of [`HttpService::inbox`].
pub struct HttpInbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HttpInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInbox").finish_non_exhaustive()
    }
}

impl HttpInbox {
    /// Every request waiting, in arrival order, requests the client already gave up on
    /// left out; empty when none is (a wake-up may come with nothing left to take).
    /// `None` once the service is gone and nothing is left: no more will come.
    ///
    /// The next request to arrive after this call wakes the language thread again.
    pub fn take(&self) -> Option<Vec<HttpExchange>> {
        // Cleared before the list is read: a request queued after this point either is in
        // what is taken now or calls `wake` again; none is left unseen.
        self.shared.signalled.store(false, Ordering::Release);
        let mut list = self.shared.list();
        if list.waiting.is_empty() && list.service_gone {
            return None;
        }
        let batch: Vec<_> = list.waiting.drain(..).collect();
        drop(list);
        Some(batch.into_iter().filter(|e| !e.is_abandoned()).collect())
    }
}

impl Drop for HttpInbox {
    fn drop(&mut self) {
        // Requests waiting are dropped unanswered (500); new ones get 503.
        let waiting = {
            let mut list = self.shared.list();
            list.inbox_gone = true;
            std::mem::take(&mut list.waiting)
        };
        drop(waiting);
    }
}

/// Held by the service: when the last copy goes, the inbox learns that nothing more comes.
struct ServiceSide(Arc<Shared>);

impl Drop for ServiceSide {
    fn drop(&mut self) {
        self.0.list().service_gone = true;
        self.0.signal();
        // The last wake-up is on its way (or one still unanswered is); the callback goes.
        let wake = self.0.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(wake);
    }
}

impl HttpService {
    /// A service that puts requests in an [`HttpInbox`] and calls `wake` when requests
    /// are waiting that the inbox has not been asked for since; past `capacity` requests
    /// waiting, more get 503 at once. `wake` runs on a runtime thread and must not block
    /// (a write to a non-blocking pipe, a thread-safe function call). It is also called
    /// once when the service is gone, so the language side learns it from `take()`, and
    /// then dropped.
    pub fn inbox(capacity: usize, wake: impl Fn() + Send + Sync + 'static) -> (Self, HttpInbox) {
        let shared = Arc::new(Shared {
            list: Mutex::new(List::default()),
            signalled: AtomicBool::new(false),
            wake: Mutex::new(Some(Box::new(wake))),
            capacity: capacity.max(1),
        });
        let side = Arc::new(ServiceSide(shared.clone()));
        let service = Self::new(move |request: http::Request<Body>| {
            let side = side.clone();
            async move {
                let shared = &side.0;
                let (respond, response) = oneshot::channel();
                {
                    let mut list = shared.list();
                    if list.inbox_gone {
                        return status_response(503, "the server no longer takes requests\n");
                    }
                    if list.waiting.len() >= shared.capacity {
                        return status_response(503, "too many requests waiting\n");
                    }
                    list.waiting.push_back(HttpExchange { request, respond });
                }
                shared.signal();
                response.await.unwrap_or_else(|_| {
                    status_response(500, "the request was dropped unanswered\n")
                })
            }
        });
        (service, HttpInbox { shared })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    fn slots() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(64))
    }

    fn get(path: &str) -> http::Request<Body> {
        http::Request::get(path).body(Body::empty()).unwrap()
    }

    /// Sends `path` through the service on its own task.
    fn send(
        service: &Arc<HttpService>,
        path: &'static str,
    ) -> tokio::task::JoinHandle<http::Response<Body>> {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .respond(
                    get(path),
                    Duration::from_secs(5),
                    super::super::Progress::new(),
                    &slots(),
                )
                .await
        })
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not met within a second");
    }

    #[tokio::test]
    async fn a_burst_costs_one_wake_up_and_is_taken_in_order() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let (service, inbox) = HttpService::inbox(16, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let service = Arc::new(service);
        let mut clients = Vec::new();
        for path in ["/a", "/b", "/c"] {
            clients.push(send(&service, path));
            // Queued in this order before the next is sent.
            let n = clients.len();
            until(|| inbox.shared.list().waiting.len() == n).await;
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "one wake-up for the burst");
        let batch = inbox.take().unwrap();
        let paths: Vec<_> = batch
            .iter()
            .map(|e| e.request().uri().path().to_owned())
            .collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        for (i, exchange) in batch.into_iter().enumerate() {
            let (_, responder) = exchange.into_parts();
            assert!(responder.respond(http::Response::new(Body::from(format!("r{i}")))));
        }
        for (i, client) in clients.into_iter().enumerate() {
            let body = client.await.unwrap().into_body().bytes(10).await.unwrap();
            assert_eq!(body, format!("r{i}"));
        }
        // Taken: the next request wakes again.
        let late = send(&service, "/d");
        until(|| wakes.load(Ordering::SeqCst) == 2).await;
        let batch = inbox.take().unwrap();
        assert_eq!(batch.len(), 1);
        drop(batch);
        assert_eq!(late.await.unwrap().status(), 500, "dropped unanswered");
        assert_eq!(inbox.take().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn past_capacity_requests_get_503_and_the_end_of_the_service_is_seen() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let (service, inbox) = HttpService::inbox(1, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let service = Arc::new(service);
        let first = send(&service, "/a");
        until(|| inbox.shared.list().waiting.len() == 1).await;
        let second = send(&service, "/b").await.unwrap();
        assert_eq!(second.status(), 503);
        let batch = inbox.take().unwrap();
        assert_eq!(batch.len(), 1);
        drop(batch);
        assert_eq!(first.await.unwrap().status(), 500);
        let before = wakes.load(Ordering::SeqCst);
        drop(service);
        assert_eq!(wakes.load(Ordering::SeqCst), before + 1, "woken at the end");
        assert_eq!(Arc::strong_count(&wakes), 1, "and the callback let go");
        assert!(inbox.take().is_none());
    }

    #[tokio::test]
    async fn requests_given_up_on_are_left_out_and_a_dropped_inbox_refuses_new_ones() {
        let (service, inbox) = HttpService::inbox(8, || {});
        let service = Arc::new(service);
        let gone = send(&service, "/gone");
        until(|| inbox.shared.list().waiting.len() == 1).await;
        gone.abort();
        let _ = gone.await;
        until(|| inbox.shared.list().waiting[0].is_abandoned()).await;
        let kept = send(&service, "/kept");
        until(|| inbox.shared.list().waiting.len() == 2).await;
        let batch = inbox.take().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].request().uri().path(), "/kept");
        drop(batch);
        let _ = kept.await;
        drop(inbox);
        assert_eq!(send(&service, "/late").await.unwrap().status(), 503);
    }
}
