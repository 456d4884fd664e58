def test_sign_in_page_renders(client):
    response = client.get("/staff/sign-in")
    assert response.status_code == 200
    assert b"csrf_token" in response.data


def test_round_page_for_organiser(client, sign_in, make_round):
    sign_in("organiser")
    round_ = make_round("open")
    response = client.get(f"/staff/rounds/{round_.id}")
    assert response.status_code == 200, response.data[:2000]
    assert round_.fingerprint.encode() in response.data
