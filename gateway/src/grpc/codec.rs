//! The protobuf codec of Keel's gRPC services: prost's, except that a request that is not a
//! valid message (bad wire format, a string that is not UTF-8) is the caller's mistake,
//! `INVALID_ARGUMENT` with code `malformed_message`, where prost's codec answers `INTERNAL`.

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec with malformed requests answered `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct KeelCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for KeelCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for KeelCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KeelDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeelDecoder(self.0.decoder())
    }
}

/// prost's decoder, its decode errors turned into `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct KeelDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for KeelDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|_| {
            super::status::invalid_argument("malformed_message", "the request is not a valid protobuf message")
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}
