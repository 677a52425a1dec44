//! Calling any `keel.v1` method from its descriptor: the methods come from the file
//! descriptor set the server registers for reflection, messages are `prost_reflect`
//! dynamic messages, and the wire carries their bytes as they are.

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Every method of every `keel.v1` service, from the reflection descriptors.
pub fn keel_methods() -> Vec<MethodDescriptor> {
    let pool = DescriptorPool::decode(keel_gateway::proto::DESCRIPTOR).expect("Keel's descriptor set decodes");
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name() == "keel.v1")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(methods.len() >= 40, "the descriptor set lists only {} keel.v1 methods", methods.len());
    methods
}

/// Encoded messages in, encoded messages out.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Writes a message's bytes as they are.
#[derive(Debug)]
pub struct RawEncoder;

/// Reads a message's bytes as they are.
#[derive(Debug)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut bytes = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

/// A channel to the Keel at `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("URI").connect().await.expect("connect gRPC")
}

/// Calls `method` with `messages` (one for a unary method; any number for a client stream)
/// and, if given, `Authorization: Bearer <token>`; an answer must decode as the output type.
pub async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    messages: Vec<Vec<u8>>,
    token: Option<&str>,
) -> Result<DynamicMessage, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/{}/{}", method.parent_service().full_name(), method.name()).parse().expect("path");
    let authorize = |request: &mut tonic::metadata::MetadataMap| {
        if let Some(token) = token {
            request.insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
    };
    let answer = if method.is_client_streaming() {
        let mut request = tonic::Request::new(futures::stream::iter(messages));
        authorize(request.metadata_mut());
        grpc.client_streaming(request, path, RawCodec).await?
    } else {
        let mut request = tonic::Request::new(messages.into_iter().next().unwrap_or_default());
        authorize(request.metadata_mut());
        grpc.unary(request, path, RawCodec).await?
    };
    let bytes = answer.into_inner();
    let decoded = DynamicMessage::decode(method.output(), bytes.as_slice());
    Ok(decoded.unwrap_or_else(|e| panic!("{}: the answer does not decode: {e}", method.full_name())))
}

/// `message` encoded.
pub fn encode(message: &DynamicMessage) -> Vec<u8> {
    message.encode_to_vec()
}
