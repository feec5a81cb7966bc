from streamlit.testing.v1 import AppTest

from conftest import REPO


def test_overview_renders_dataset_counts_from_the_pack(data_pack):
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["data.nih_root"] = str(data_pack / "nih")
    at.session_state["data.covid_root"] = str(data_pack / "covid")
    at.run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["658", "111,462"]


def test_overview_reports_a_bad_root_without_crashing(tmp_path):
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["data.nih_root"] = str(tmp_path / "nope")
    at.run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
