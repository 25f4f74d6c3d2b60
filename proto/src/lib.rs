//! Sluice's wire contract: the generated gRPC types and services, the file
//! descriptor set that server reflection serves, and the key partitioner that
//! every client must compute the same way as the broker.

#![allow(missing_docs, clippy::all)]

/// Version 1 of the Sluice API (`proto/sluice/v1`).
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// The CloudEvents protobuf format (`proto/io/cloudevents/v1`, vendored
/// from the CloudEvents specification), taken by `sluice.v1.Events`.
pub mod io {
    /// CloudEvents.
    pub mod cloudevents {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("io.cloudevents.v1");
        }
    }
}

/// KEDA's External Scaler interface (`proto/externalscaler`).
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

/// Broker-to-broker messages (`proto/sluice/internal/v1`): not part of the
/// client API, absent from reflection, free to change between versions.
pub mod internal {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("sluice.internal.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Sluice `.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");

/// The partition a keyed message goes to when the producer names none.
///
/// Part of the wire contract: `crc32(key) % partitions` with the zlib CRC-32,
/// available in every language, so producers written anywhere agree with the broker.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioner_is_the_zlib_crc32() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_for_key(b"123456789", 7), 0xCBF4_3926 % 7);
        assert_eq!(partition_for_key(b"x", 0), 0);
    }
}
