"""What the tests (and the benchmarks) share: in-memory fakes of the services' ports (``fakes``) and
the world builder that onboards collectivités the way the editor does (``world``)."""
