//! The tracker link as the model's [`Coordinator`].

use std::future::Future;

use super::{ClientError, TrackerLink};
use crate::model::{CoordError, Coordinator};
use titorrent_tracker::proto::{Request, Response};

impl From<ClientError> for CoordError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Offline => CoordError::Offline,
            ClientError::Refused(p) => CoordError::Refused(p),
            other @ (ClientError::Io(_) | ClientError::Frame(_) | ClientError::Tls(_) | ClientError::Protocol(_)) => {
                CoordError::Failed(other.to_string())
            }
        }
    }
}

impl Coordinator for TrackerLink {
    fn request(&self, req: Request) -> impl Future<Output = Result<Response, CoordError>> + Send {
        let link = self.clone();
        async move { TrackerLink::request(&link, req).await.map_err(CoordError::from) }
    }
}
