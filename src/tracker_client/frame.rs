//! Reading and writing the tracker's length-prefixed frames on async streams.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::ClientError;
use titorrent_tracker::frame_io::{read_body, ReadError};
use titorrent_tracker::proto::{decode_body, encode_frame, ClientFrame, ServerFrame};

/// Reads one server frame; `None` when the tracker closed the connection
/// between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<ServerFrame>, ClientError> {
    let body = read_body(r).await.map_err(|e| match e {
        ReadError::Io(e) => ClientError::Io(e),
        ReadError::Frame(e) => ClientError::Frame(e),
    })?;
    Ok(body.map(|b| decode_body(&b)).transpose()?)
}

pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &ClientFrame) -> Result<(), ClientError> {
    let bytes = encode_frame(f)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// The error for a connection the tracker closed.
pub(crate) fn closed() -> ClientError {
    ClientError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the tracker closed the connection"))
}
