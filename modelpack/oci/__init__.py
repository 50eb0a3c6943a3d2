"""OCI image references and the distribution API client: no modelpack rules here."""
