//! Server reflection in both versions answers without `.proto` files: service
//! lists and lookups by method symbol (what ghz and grpcurl do).

use sluice_tests::TestBroker;
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

const SERVICES: [&str; 4] = ["sluice.v1.Admin", "sluice.v1.Producer", "sluice.v1.Consumer", "grpc.health.v1.Health"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_services_and_resolve_methods() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(broker.channel());
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sluice.v1.Producer.Produce".into(),
            )),
        },
    ];
    let mut answers = client.server_reflection_info(tokio_stream::iter(requests)).await?.into_inner();
    match answers.next().await.transpose()?.and_then(|r| r.message_response) {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            for s in SERVICES {
                assert!(names.iter().any(|n| n == s), "v1 lists {s}: {names:?}");
            }
        }
        other => panic!("unexpected v1 answer {other:?}"),
    }
    match answers.next().await.transpose()?.and_then(|r| r.message_response) {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("unexpected v1 symbol answer {other:?}"),
    }

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(broker.channel());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "sluice.v1.Consumer.Pull".into(),
        )),
    };
    let mut answers = alpha.server_reflection_info(tokio_stream::iter(vec![request])).await?.into_inner();
    match answers.next().await.transpose()?.and_then(|r| r.message_response) {
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("unexpected v1alpha answer {other:?}"),
    }
    Ok(())
}
