//! Reads of many: list (whole, or a page at a snapshot), watch.
use super::*;
use crate::server::store::{trigger_field, Indexed};

impl Api {
    /// The objects `filter` selects and the resourceVersion of the list.
    pub async fn list(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        filter: &Filter,
    ) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let (items, rv) = self
            .read_current(&r.key(), ns, filter)
            .await
            .map_err(|e| store_error(r, e))?;
        let selected = items.into_iter().filter(|o| filter.matches(o)).collect();
        Ok((selected, rv))
    }

    /// The objects of `r` (in `ns`) that the store's index `by` selects (a node's pods, a
    /// controller's pods), without reading the others.
    pub async fn list_indexed(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        by: Indexed<'_>,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let (items, _) = self
            .store
            .list_indexed(&r.key(), ns, by)
            .await
            .map_err(|e| store_error(r, e))?;
        Ok(items)
    }

    /// Every object of `r` (in `ns`) cut to its metadata ([`ObjectStore::list_metadata`]).
    pub async fn list_metadata(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let (items, _) = self
            .store
            .list_metadata(&r.key(), ns)
            .await
            .map_err(|e| store_error(r, e))?;
        Ok(items)
    }

    /// The current objects of `key` (in `ns`) `filter` may select: through the store's index of
    /// the trigger field when the field selector names its value (an agent's list of its pods
    /// reads its pods only), else all of them.
    async fn read_current(
        &self,
        key: &str,
        ns: Option<&str>,
        filter: &Filter,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let value = trigger_field(key).and_then(|f| filter.field_equals(f));
        match value {
            Some(v) => self.store.list_indexed(key, ns, Indexed::Trigger(v)).await,
            None => self.store.list(key, ns).await,
        }
    }

    /// One page of a list (`limit`, `continue`, `resourceVersionMatch`): the items `filter`
    /// selects after the continue token's position, read from the current state or from the
    /// snapshot at the token's (or `Exact`) resourceVersion, as kube-apiserver reads etcd.
    pub async fn list_page(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        filter: &Filter,
        opts: &ListOpts,
    ) -> Result<Page, ApiError> {
        authorize(user, Verb::List, r, None, ns, None)?;
        let key = r.key();
        let (items, rv) = match opts.at {
            ReadAt::Latest { min } => {
                query::fresh_enough(&*self.store, min).await?;
                self.read_current(&key, ns, filter).await
            }
            ReadAt::Exact(rv) => {
                query::fresh_enough(&*self.store, rv).await?;
                self.store
                    .list_at(&key, ns, rv)
                    .await
                    .map(|items| (items, rv))
            }
        }
        .map_err(|e| match (e, &opts.after) {
            (StoreError::Expired { .. }, Some((after_ns, after_name))) => {
                query::continue_expired(after_ns, after_name)
            }
            // kube-apiserver's words for an exact list etcd compacted past
            (StoreError::Expired { .. }, None) => {
                ApiError::gone("The resourceVersion for the provided list is too old.")
            }
            (e, _) => store_error(r, e),
        })?;
        let position = |o: &Value| {
            (
                meta::meta_str(o, "namespace").unwrap_or("").to_string(),
                meta::meta_str(o, "name").unwrap_or("").to_string(),
            )
        };
        let mut rest = items
            .into_iter()
            .filter(|o| opts.after.as_ref().is_none_or(|after| position(o) > *after))
            .filter(|o| filter.matches(o))
            .peekable();
        let page: Vec<Arc<Value>> = match opts.limit {
            Some(limit) => rest.by_ref().take(limit).collect(),
            None => rest.by_ref().collect(),
        };
        let more = rest.peek().is_some();
        let continue_token = match (more, page.last()) {
            (true, Some(last)) => {
                let (ns, name) = position(last);
                Some(query::encode_continue(rv as i64, &ns, &name))
            }
            _ => None,
        };
        // counted only without a selector, as kube-apiserver does
        let remaining = (more && filter.is_empty()).then(|| rest.count() as u64);
        Ok(Page {
            items: page,
            rv,
            continue_token,
            remaining,
        })
    }

    /// Starts a watch of `r` (the caller renders and filters its events).
    pub async fn watch(
        &self,
        user: &User,
        r: &'static Resource,
        ns: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, ApiError> {
        authorize(user, Verb::Watch, r, None, ns, None)?;
        self.store
            .watch(Some(&r.key()), ns, from)
            .await
            .map_err(|e| store_error(r, e))
    }

    /// Authorizes `user` to watch `resources` and returns the store's resourceVersion now:
    /// where a controller's feed (`controllers::Feed`) starts reading the store's history.
    pub fn watch_from_now(
        &self,
        user: &User,
        resources: &[&'static Resource],
    ) -> Result<u64, ApiError> {
        for r in resources {
            authorize(user, Verb::Watch, r, None, None, None)?;
        }
        Ok(*self.store.changes().borrow())
    }

    /// One watch over several resources, in the order of their changes (for controllers).
    pub async fn watch_all(
        &self,
        user: &User,
        resources: &[&'static Resource],
    ) -> Result<Watch, ApiError> {
        for r in resources {
            authorize(user, Verb::Watch, r, None, None, None)?;
        }
        let keys: Vec<String> = resources.iter().map(|r| r.key()).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.store
            .watch_kinds(&keys, WatchFrom::Current { initial: false })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}
