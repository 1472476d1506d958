//! `wxsub callback`: WeChat's redirect, read and checked; and the check and the printing of an
//! answer that `wxsub mobile-answer` shares.

use subscribe_types::{AuthorizationAnswer, Expectation, Reserved, Scene, TemplateId};

use crate::options::{Usage, parse};
use crate::output::Exit;

/// The arguments of `wxsub callback`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The callback URL or query.
    pub(crate) url_or_query: String,
    /// Fail unless the answer is for this template.
    #[arg(long)]
    pub(crate) expect_template_id: Option<String>,
    /// Fail unless the answer is for this scene.
    #[arg(long)]
    pub(crate) expect_scene: Option<String>,
    /// Fail unless the answer carries this state.
    #[arg(long)]
    pub(crate) expect_reserved: Option<String>,
}

/// `wxsub callback`: reads WeChat's redirect and checks it against what was asked.
pub(crate) fn run(args: &Args) -> Result<Exit, Usage> {
    let answer =
        AuthorizationAnswer::parse(&args.url_or_query).map_err(|e| format!("invalid callback: {e}"))?;
    check_and_print(
        &answer,
        args.expect_template_id.as_deref(),
        args.expect_scene.as_deref(),
        args.expect_reserved.as_deref(),
    )
}

/// Checks an answer (web or mobile) against what was asked and prints it as one JSON line.
pub(crate) fn check_and_print(
    answer: &AuthorizationAnswer,
    expect_template_id: Option<&str>,
    expect_scene: Option<&str>,
    expect_reserved: Option<&str>,
) -> Result<Exit, Usage> {
    let mut expect = Expectation::new();
    if let Some(t) = expect_template_id {
        expect = expect.template_id(parse("--expect-template-id", TemplateId::new(t))?);
    }
    if let Some(s) = expect_scene {
        expect = expect.scene(parse("--expect-scene", s.parse::<Scene>())?);
    }
    if let Some(r) = expect_reserved {
        expect = expect.reserved(parse("--expect-reserved", Reserved::new(r))?);
    }
    answer.verify(&expect).map_err(|e| format!("callback rejected: {e}"))?;
    let mut out = serde_json::json!({
        "action": answer.action().as_str(),
        "template_id": answer.template_id().as_str(),
        "scene": answer.scene().get(),
        "reserved": answer.reserved().as_str(),
    });
    if let Some(o) = answer.openid() {
        out["openid"] = o.as_str().into();
    }
    println!("{out}");
    Ok(Exit::Ok)
}
