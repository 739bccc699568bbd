from greet import greeting


def main():
    return greeting("python")
