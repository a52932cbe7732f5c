from squeezebench.hardware.memory import current_rss_mb, peak_rss_mb


def test_peak_tracks_a_large_allocation():
    before = peak_rss_mb()
    block = bytearray(300 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert peak_rss_mb() >= before + 250 or peak_rss_mb() >= current_rss_mb() >= 300
    del block
    assert peak_rss_mb() >= current_rss_mb()
