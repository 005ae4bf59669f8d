"""Local stand-ins of the external services (HubEE, API Particulier), served over real HTTP."""
