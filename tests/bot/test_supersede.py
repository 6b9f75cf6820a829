import pytest

from bot.supersede import attribute, replaced, replaces


@pytest.mark.parametrize(("old", "new"), [
    ("The user lives in Lisbon.", "The user moved to Porto."),
    ("The user lives in Lisbon.", "The user lives in Porto now."),
    ("The user eats meat.", "The user doesn't eat meat any more."),
    ("The user eats meat.", "The user is vegetarian."),
    ("The user is vegetarian.", "The user is vegan."),
    ("The user's name is Dana.", "The user's name is now Danielle."),
    ("The user's name is Dana.", "The user is called Danielle."),
    ("The user works as a nurse.", "The user now works as a teacher."),
    ("The user likes coffee.", "The user doesn't like coffee anymore."),
    ("The user doesn't eat meat.", "The user eats meat."),
    ("I live in Lisbon", "I moved to Porto"),
    ("My name is Dana", "My name is Danielle now"),
    ("The user's name is Dana.", "The user is Priya."),
    ("The user is Priya.", "The user's name is Dana."),
    ("I eat meat", "I don't eat meat any more"),
])
def test_updates_and_contradictions_replace(old, new):
    assert replaces(new, old)


@pytest.mark.parametrize(("old", "new"), [
    ("The user has a cat.", "The user has a dog."),
    ("The user likes jazz music.", "The user likes hiking."),
    ("The user's sister is called Ana.", "The user's brother is called Luis."),
    ("The user works as a nurse.", "The user's name is Dana."),
    ("The user lives in Lisbon.", "The user has a cat."),
    ("The user likes pizza.", "The user likes pasta."),
    ("The user lives in Lisbon.", "The user lives in Lisbon."),
    ("The user doesn't like spiders.", "The user likes dogs."),
    ("The user's name is Dana.", "The user is Brazilian."),
    ("The user's name is Dana.", "The user is French."),
    ("The user's name is Dana.", "The user is Catholic."),
    ("The user's name is Dana.", "The user is Greek."),
    ("The user's name is Dana.", "The user is Dana."),
])
def test_additions_replace_nothing(old, new):
    assert not replaces(new, old)


def test_attribute_values():
    assert attribute("The user moved to Porto.") == ("home", "porto")
    assert attribute("The user has a cat.") is None
    assert attribute("The user is Priya Sharma.") == ("name", "priya sharma")
    assert attribute("I'm Priya") == ("name", "priya")
    for not_a_name in ("The user is allergic to peanuts.", "The user is ADHD.", "The user is Japanese.",
                       "The user is Priya's friend.", "The user is Swiss.", "The user is British."):
        assert attribute(not_a_name) is None, not_a_name


def test_replaced_picks_only_the_outdated_fact():
    old = ["The user has a cat named Tom.", "The user lives in Lisbon.", "The user likes jazz."]
    assert replaced(old, "The user moved to Porto.") == [1]
