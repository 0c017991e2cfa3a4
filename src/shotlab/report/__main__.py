"""python -m shotlab.report <sweep folder>"""

from shotlab.report import main

main()
