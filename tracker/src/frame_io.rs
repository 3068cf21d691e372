//! Reading frames off a tokio stream, shared by the server and its clients:
//! the length prefix, the size limit, and a clean end of stream between
//! frames told apart from one inside a frame.

use crate::proto::{FrameError, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads one length-prefixed frame body; `None` when the stream ended
/// cleanly between frames. A length over [`MAX_FRAME`] is an error before
/// anything is allocated.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len).into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}
