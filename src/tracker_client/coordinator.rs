//! The tracker link as the model's [`Coordinator`].

use std::future::Future;

use super::{ClientError, TrackerLink};
use crate::model::{CoordError, Coordinator};
use titorrent_tracker::calls::Call;
use titorrent_tracker::proto::Seq;

impl From<ClientError> for CoordError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Offline => CoordError::Offline,
            // The request went out on a connection that failed before the
            // answer came.
            ClientError::Lost | ClientError::Io(_) | ClientError::Tls(_) => CoordError::Lost,
            ClientError::Refused(p) => CoordError::Refused(p),
            ClientError::Unexpected(m) => CoordError::Unexpected(m),
            other @ (ClientError::Frame(_) | ClientError::Protocol(_)) => CoordError::Protocol(other.to_string()),
        }
    }
}

impl Coordinator for TrackerLink {
    fn call_at<C: Call + Send>(&self, c: C) -> impl Future<Output = Result<(C::Answer, Option<Seq>), CoordError>> + Send {
        let link = self.clone();
        async move { TrackerLink::call_at(&link, c).await.map_err(CoordError::from) }
    }
}
