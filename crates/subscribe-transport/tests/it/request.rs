use subscribe_transport::*;

use crate::{SECRET, TOKEN};

#[test]
fn debug_masks_token_secret_and_userinfo_and_shows_body_length_only() {
    let uri = format!(
        "http://user:{SECRET}@127.0.0.1:1/cgi-bin/token?grant_type=client_credential&appid=wx1&secret={SECRET}&access_token={TOKEN}"
    );
    let body = format!(r#"{{"secret":"{SECRET}"}}"#);
    let req = HttpRequest::post(&uri, body.clone()).unwrap();
    for shown in [format!("{req:?}"), format!("{req:#?}"), req.redacted_uri()] {
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("appid=wx1"), "non-secret parameters stay readable: {shown}");
    }
    assert!(format!("{req:?}").contains(&format!("body_len: {}", body.len())));
    // The real request still carries everything.
    assert_eq!(req.query_param("access_token"), Some(TOKEN));
}

#[test]
fn redaction_is_case_insensitive_and_keeps_order() {
    assert_eq!(redact_uri("/p?A=1&ACCESS_TOKEN=x&b=2"), "/p?A=1&ACCESS_TOKEN=[redacted]&b=2");
    assert_eq!(redact_uri("/p"), "/p");
    assert_eq!(redact_uri("/p?secret"), "/p?secret");
}

#[test]
fn transport_errors_display_the_kind_only() {
    let e = TransportError::io(format!("reset while sending /x?access_token={TOKEN}"));
    assert_eq!(e.to_string(), "the connection failed after the request started");
    assert!(!e.request_never_left());
    assert!(TransportError::from_kind(TransportErrorKind::InvalidRequest).request_never_left());
}

#[tokio::test]
async fn transport_fn_and_shared_handles_work_as_dyn() {
    let t = SharedTransport::new(transport_fn(|req: HttpRequest| async move {
        Ok(HttpResponse::new(req.path().to_owned().into()))
    }));
    let as_dyn: std::sync::Arc<dyn HttpTransport> = std::sync::Arc::new(t.clone());
    let resp = as_dyn.send(HttpRequest::get("http://h/echo").unwrap()).await.unwrap();
    assert_eq!(resp.body().as_ref(), b"/echo");
}
