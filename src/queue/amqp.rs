//! RabbitMQ backend. SKELETON (queue helper).

use async_trait::async_trait;

use super::{Backend, Consumer, DeadLetter, Hint, QueueDepth, QueueError};
use crate::config::QueueConfig;

pub struct AmqpQueue {}

impl AmqpQueue {
    pub async fn open(_cfg: &QueueConfig) -> Result<AmqpQueue, QueueError> {
        Err(QueueError::Unavailable("amqp backend not built yet".into()))
    }
}

#[async_trait]
impl Backend for AmqpQueue {
    async fn publish(&self, _hints: &[Hint]) -> Result<(), QueueError> {
        todo!()
    }
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        todo!()
    }
    async fn ready(&self) -> Result<(), QueueError> {
        todo!()
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        todo!()
    }
    async fn dead_letters(&self, _limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        todo!()
    }
    async fn replay_dead_letters(&self, _ids: &[String]) -> Result<usize, QueueError> {
        todo!()
    }
    async fn close(&self) {}
}
