//! A gRPC codec that sends and receives bytes as they are, to put malformed
//! protobuf on the wire.

/// Sends `body` as a unary request's message bytes, unchanged: malformed protobuf on purpose.
pub async fn send_raw(
    mut grpc: tonic::client::Grpc<tonic::transport::Channel>,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = RawCodec;
    grpc.unary::<Vec<u8>, Vec<u8>, _>(
        {
            let mut request = tonic::Request::new(body);
            request.set_timeout(std::time::Duration::from_secs(5));
            request
        },
        tonic::codegen::http::uri::PathAndQuery::try_from(path)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?,
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Sends bytes as they are, to deliver malformed protobuf.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}
