import pytest


@pytest.fixture
def client(fleet):
    """An SDK client of the module's fleet, once every agent is registered."""
    fleet.wait_agents()
    with fleet.client() as c:
        yield c
