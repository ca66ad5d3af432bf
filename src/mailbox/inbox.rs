//! The way into a service's queue: the [`Inbox`] a local service's events
//! go to, which the dispatcher holds while the service is open and which
//! callers of the same dispatcher reach through the service's bindings (see
//! `direct.rs`).

use std::any::Any;
use std::sync::{Arc, Weak};

use crossbeam_channel::Sender;

use crate::direct::DirectCalls;
use crate::event::Event;
use crate::ids::{Queue, ServiceBinding};

/// Where a local service's events go, for callers in the same dispatcher.
pub(crate) struct Inbox {
    /// The process (dispatcher) uid the service belongs to: a binding used
    /// with another dispatcher's service goes through that dispatcher.
    pub process: u64,
    pub events: Sender<Event>,
    /// Requests are refused as busy once this many events are queued.
    pub capacity: usize,
    pub calls: Arc<DirectCalls>,
}

impl Inbox {
    /// The queue of the binding's agent, if it is a service of this process
    /// and still open.
    pub(crate) fn of(binding: &ServiceBinding) -> Option<Arc<Inbox>> {
        let queue: Arc<dyn Any + Send + Sync> = binding.queue()?;
        queue.downcast::<Inbox>().ok()
    }

    /// The weak reference a binding of the service carries, which
    /// [`of`](Self::of) upgrades.
    pub(crate) fn downgrade(inbox: &Arc<Inbox>) -> Weak<Queue> {
        Arc::downgrade(inbox) as Weak<Queue>
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.events.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}
