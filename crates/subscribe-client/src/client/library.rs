//! The template library (模板库, `/wxaapi/newtmpl/*`) the mini-program and notification
//! templates come from, through the same token handling, retry policy and honest outcomes as
//! the sends.

use subscribe_types::{
    AddTemplate, AddedTemplate, Categories, DeleteTemplate, Endpoint, GetCategories, GetTemplates, Keywords,
    KeywordsQuery, PublicTemplates, TemplateId, Templates, TitlesQuery,
};

use super::Client;
use crate::error::{LibraryCall, LibraryError};

impl Client {
    /// The categories the account's templates come from (`getcategory`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn template_categories(&self) -> Result<Categories, LibraryError> {
        self.library(LibraryCall::Categories, &GetCategories).await
    }

    /// A page of public templates (`getpubtemplatetitles`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn public_templates(&self, query: &TitlesQuery) -> Result<PublicTemplates, LibraryError> {
        self.library(LibraryCall::PublicTemplates, query).await
    }

    /// A public template's keywords (`getpubtemplatekeywords`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn template_keywords(&self, tid: u64) -> Result<Keywords, LibraryError> {
        self.library(LibraryCall::Keywords, &KeywordsQuery { tid }).await
    }

    /// Adds a private template from a public one (`addtemplate`) and returns its id.
    ///
    /// # Errors
    /// A [`LibraryError`]. When its answer was lost, [`outcome_known`](LibraryError::outcome_known)
    /// is `false` (`kind()` is `Unknown`): the template may exist, so list them with
    /// [`templates`](Self::templates) before adding it again (an account holds at most 25).
    pub async fn add_template(&self, request: &AddTemplate) -> Result<TemplateId, LibraryError> {
        let added: AddedTemplate = self.library(LibraryCall::AddTemplate, request).await?;
        Ok(added.pri_tmpl_id)
    }

    /// Deletes a private template (`deltemplate`).
    ///
    /// # Errors
    /// A [`LibraryError`]. When its answer was lost, [`outcome_known`](LibraryError::outcome_known)
    /// is `false` (`kind()` is `Unknown`): the template may be gone; list them with
    /// [`templates`](Self::templates).
    pub async fn delete_template(&self, template: &TemplateId) -> Result<(), LibraryError> {
        self.library(LibraryCall::DeleteTemplate, &DeleteTemplate { pri_tmpl_id: template.clone() }).await?;
        Ok(())
    }

    /// The account's private templates, with their keys and enum values (`gettemplate`): what a
    /// message's data is checked against with
    /// [`MessageData::check_against`](subscribe_types::MessageData::check_against).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn templates(&self) -> Result<Templates, LibraryError> {
        self.library(LibraryCall::Templates, &GetTemplates).await
    }

    /// One template-library call through [`execute`](Self::execute), its error named after
    /// `call`.
    async fn library<E: Endpoint + ?Sized>(
        &self,
        call: LibraryCall,
        endpoint: &E,
    ) -> Result<E::Response, LibraryError> {
        match self.execute(endpoint).await {
            Ok(answered) => Ok(answered.response),
            Err(e) => Err(LibraryError::new(call, e)),
        }
    }
}
