def greeting(who):
    return "hello from " + who + "\n"
