"""HTTP client for the Allen Brain Atlas API: queries, paging, retries, cache, downloads (no Qt)."""
